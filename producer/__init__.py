"""The publish API scrapers call: `Publisher.publish(snapshot)` and `Publisher.publish_cycle(snapshots)`."""

from producer.publisher import Publisher, PublishResult
from shared.wire import Market, Snapshot

__all__ = ["Market", "PublishResult", "Publisher", "Snapshot"]
