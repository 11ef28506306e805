"""Code the benchmarks and the tests share, kept out of the shipped packages (cccmr_model, server, client).

- `inprocess_grid`: `InProcessGrid`, a Flower Grid that hands each message to a ClientApp in this process.
- `synthetic`: `SyntheticCohort`, an in-memory cohort of random tensors with the data package's item layout.
- `site_worker`: the site file of a `cccmr site-worker` and the wait for its socket.
- `report`: `write_report`, a benchmark's markdown table and its figures as JSON.
"""
