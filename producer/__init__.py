"""The publish API scrapers call: `Publisher.publish(snapshot)` and `Publisher.publish_cycle(snapshots)`."""

from producer.async_publisher import AsyncPublisher
from producer.core import PublishRefused, PublishResult
from producer.publisher import Publisher
from shared.wire import Market, Snapshot

__all__ = ["AsyncPublisher", "Market", "PublishRefused", "PublishResult", "Publisher", "Snapshot"]
