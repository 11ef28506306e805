"""The hospital site's Flower ClientApp (imports flwr); training itself lives in `cccmr_model`."""
