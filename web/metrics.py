"""``/metrics``: the node's state in Prometheus' text format (prometheus_client).

Each scrape builds the figures from the node's state (a custom collector on a
registry of this node's own, not the library's global one: tests run several nodes
in one process), so nothing is updated on the node's hot paths for metrics' sake.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from node.app import NodeApp


class NodeCollector(Collector):
    def __init__(self, node: NodeApp) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            "idunno_members", "Members in this node's view, by state", labels=["state"]
        )
        states = Counter(m["status"] for m in self.node.list_mem()["members"])
        for state in ("alive", "suspect"):
            members.add_metric([state], states.get(state, 0))
        yield members


def registry_for(node: NodeApp) -> CollectorRegistry:
    """A registry of ``node``'s own whose scrapes read its state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of one scrape."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
