"""A hospital site's own work, flwr-free: who it is (`config`), its ingestion cache and split (`data`), what it
does for one train or evaluate message (`tasks`, `timing`), and the warm site worker that serves those messages
(`worker`). The Flower ClientApp in `client/` only reads messages and calls these, in its own process or through
the worker (`cccmr_model/channel.py`)."""
