"""The risk domain: index maths, baselines, the surprise and spatial terms, levels, and the worker's output
records with their rules. Pure: nothing here imports Kafka, ClickHouse, Faust, FastAPI or ``pingan.store``."""
