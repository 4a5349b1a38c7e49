"""Producers: the demo district generator, the simulated city, pseudonyms, and the shared Kafka producer."""

from pingan.producers.kafka import EventProducer, encode_event
from pingan.producers.pseudonym import pseudonymise
from pingan.producers.simulator import (
    DAILY_EVENTS,
    SOURCES,
    Burst,
    CitySimulator,
    SimulationReport,
    demo_bursts,
    run_simulation,
    simulate_forever,
)

__all__ = [
    "DAILY_EVENTS",
    "SOURCES",
    "Burst",
    "CitySimulator",
    "EventProducer",
    "SimulationReport",
    "demo_bursts",
    "encode_event",
    "pseudonymise",
    "run_simulation",
    "simulate_forever",
]
