"""The coordinating site's Flower ServerApp and its phase-aware FedAvg strategy (imports flwr)."""
