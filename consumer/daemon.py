"""The consumer daemon's loop: leases, reads, retries, trimming and a graceful stop.

The loop runs in the main thread. Each batch's commit (the Postgres transaction, then the Redis bookkeeping)
runs on a second thread, and while it waits on the servers the loop reads and prepares the next batch.
Batches still commit one at a time and in the order they were read, so each shard stays in order.
"""

from __future__ import annotations

import contextvars
import gc
import time
from concurrent.futures import ThreadPoolExecutor

import redis
import structlog

from consumer.batch import BatchProcessor, Limits, PreparedBatch
from consumer.errors import Refused, Transient, Unavailable, classify_redis_error
from consumer.leases import Leases
from consumer.memory_watch import MemoryWatch, log_memory_policy
from consumer.metrics import ConsumerMetrics
from consumer.shards import ShardStates, State, redelivery_count
from consumer.stopping import Stop
from consumer.stream import NEW, OWN_HISTORY, Outcome, ShardStreams
from consumer.sweep import FingerprintSweep
from consumer.writer import Writer
from shared.backoff import compute_backoff
from shared.cli import EXIT_REFUSED, EXIT_SETTINGS
from shared.memory import RedisMemory, read_memory
from shared.redis_client import connect, first_contact
from shared.settings import Settings
from shared.shard_count import ShardCountMismatch, settle
from shared.trim import trim
from shared.wire import DataLimits

log = structlog.get_logger(__name__)

# Retries of a failing server wait at most this long: the renewal thread keeps the leases meanwhile, so
# the wait only bounds how soon an outage's end is noticed.
RETRY_CAP_S = 5.0


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.consumer_name
        self.keys = settings.keys
        self.client = connect(settings.redis_url, settings.redis_timeout_s)
        self.streams = ShardStreams(self.client, self.keys, self.name)
        # Renewal pauses once the loop has been silent for longer than two commits at their deadline.
        stall_limit_s = 2 * settings.db_deadline_s + settings.lease_ttl_ms / 1000
        self.leases = Leases(self.client, self.keys, self.name, settings.lease_ttl_ms, stall_limit_s)
        self.writer = Writer(
            settings.database_url,
            settings.db_deadline_s,
            feed_id_cache=settings.feed_id_cache,
            market_cache=settings.market_cache,
            application_name=f"odds-{self.name}",
        )
        self.processor = BatchProcessor(
            self.streams,
            self.writer,
            Limits(
                settings.max_entry_bytes,
                settings.max_deliveries,
                settings.batch_max_rows,
                settings.market_cache,
                DataLimits(settings.max_markets, settings.max_outcomes),
            ),
        )
        self.memory = MemoryWatch(self.client, self.streams)
        self.metrics = ConsumerMetrics(self.client, self.keys, self.memory)
        self.sweep = FingerprintSweep(self.client, self.keys, settings.fingerprint_expiry_s)
        # What to read next from each shard we hold, and when a shard may be given back (shards.py).
        self.states = ShardStates()
        # The next batch, read and prepared while the previous one committed; its entries are pending.
        self.prefetched: PreparedBatch | None = None
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self.stop = Stop()
        self.shard_count_settled = False
        self._next_trim = 0.0

    def run(self) -> int:
        """Run until stopped: 0 after a stop, EXIT_REFUSED when Redis or Postgres refuses this consumer."""
        self.stop.install()
        _tune_garbage_collector()
        structlog.contextvars.bind_contextvars(
            stream=self.settings.stream, group=self.settings.group, consumer=self.name
        )
        try:
            memory = self._check_access()
        except Refused as exc:
            log.error("consumer_refused", error=str(exc))
            return EXIT_REFUSED
        except ShardCountMismatch as exc:
            log.error("shard_count_mismatch", error=str(exc))
            return EXIT_SETTINGS
        log.info(
            "consumer_started",
            redis=self.settings.redis_url,
            database=self.settings.database_url,
            shards=self.settings.shards,
            metrics_port=self.settings.metrics_port,
        )
        log_memory_policy(memory)
        self.leases.start_renewing()
        self._count_start()
        server = self.metrics.serve(self.settings.metrics_port) if self.settings.metrics_port else None
        try:
            self._loop()
        except ShardCountMismatch as exc:
            log.error("shard_count_mismatch", error=str(exc))
            self._committer.shutdown()
            self.writer.discard()
            return EXIT_SETTINGS
        except Refused as exc:
            # Leases and pending entries are left to their TTL and the next owner, as after a crash:
            # giving them back would only be refused too.
            log.error("consumer_refused", error=str(exc))
            self._committer.shutdown()
            self.writer.discard()
            return EXIT_REFUSED
        except Exception:
            # Logged before the traceback ends the process: a consumer that keeps crashing on the same
            # entries shows in status too (its starts, and their rising delivery counts).
            log.exception("consumer_crashed")
            raise
        finally:
            if server is not None:
                server.shutdown()
        log.info("consumer_stopped")
        return 0

    def _loop(self) -> None:
        failures = 0
        while not self.stop.requested:
            try:
                worked = self.step()
                failures = 0
                if not worked:
                    self._sleep(compute_backoff(0, base_s=0.05, cap_s=0.05))
            except Transient as exc:
                level = log.error if isinstance(exc, Unavailable) else log.warning
                level("consumer_retrying", cause=exc.cause, error=str(exc), attempt=failures)
                self.metrics.retried(exc)
                self._sleep(compute_backoff(failures, base_s=0.1, cap_s=RETRY_CAP_S))
                failures += 1
        log.info("consumer_stopping", signal=self.stop.signal_name)
        # The batch in hand includes the one prefetched: finish it too rather than leave it to a reclaim.
        batch = self._take_prefetched()
        if batch is not None:
            self._process(batch)
        self._release()

    def _count_start(self) -> None:
        """Count this start under the consumer's name, for status; a Redis that refuses must not stop it."""
        try:
            self.client.hincrby(self.keys.starts, self.name, 1)
        except redis.RedisError as exc:
            log.warning("start_not_counted", error=str(exc))

    def _check_access(self) -> RedisMemory | None:
        """Fail at start, once, when a server refuses this consumer; one that cannot be reached yet is
        waited for by the loop, as it would be later.

        The first lease round and the memory reading run here, ahead of the loop, so that the credentials
        and most permissions are proven before the consumer says it started. Returns the memory reading.
        """
        memory = None
        try:
            self.client.ping()  # credentials and certificate, before anything is taken
            self._settle_shard_count()
            try:
                self.writer.check()
            except Transient as exc:
                log.warning("postgres_not_reachable_at_start", error=str(exc))
            self._maintain_leases(force=True)
            memory = read_memory(self.client)
        except redis.RedisError as exc:
            error = classify_redis_error(exc)
            if isinstance(error, Refused):
                raise error from exc
            log.warning("redis_not_reachable_at_start", error=str(error))
        return memory

    def step(self) -> bool:
        """One round: leases, one batch if any (prefetched or read now), trimming if due.

        True if entries were processed.
        """
        try:
            return self._step_redis()
        except redis.RedisError as exc:
            # A read that failed (a timeout, a dropped connection) may still have delivered entries into
            # our pending list; re-reading our own history before new entries picks them up.
            self.states.reread_all()
            raise classify_redis_error(exc) from exc

    def _step_redis(self) -> bool:
        self._settle_shard_count()
        self._maintain_leases()
        batch = self._take_prefetched()
        if batch is None:
            batch = self._read(self.states.next_read())
        if batch is not None:
            self._process(batch)
        self._give_back()
        self._trim_if_due()
        self.memory.sample()
        self.metrics.refresh(self.leases.owned)
        return batch is not None

    def _settle_shard_count(self) -> None:
        """Before the first lease: a consumer set to another shard count than the producers' would leave
        shards unread (raises ShardCountMismatch; shared/shard_count.py)."""
        if not self.shard_count_settled:
            first_contact(self.client)
            settle(self.client, self.keys)
            self.shard_count_settled = True

    def _maintain_leases(self, force: bool = False) -> None:
        """Take in what the renewal thread found lost, and rebalance towards our share.

        Shards above our share are only marked to give back (see _give_back).
        """
        self.leases.alive()
        change = self.leases.rebalance(force, self.states.releasing)
        self.states.follow(self.leases.owned, change.gained)
        self.states.above_share(change.surplus)
        if change.gained:
            self.streams.ensure_groups()

    def _give_back(self) -> None:
        """Release the shards above our share once no batch in hand holds any of their entries.

        The batch being committed is done by now; a batch prefetched before the decision may still hold
        some, and then the next step processes it first.
        """
        in_hand = self._shards_of(self.prefetched) if self.prefetched is not None else set()
        if self.states.may_release(in_hand):
            self.leases.release(self.states.released(), "rebalance")

    def _read(self, plan: dict[int, State]) -> PreparedBatch | None:
        shards = {n: NEW if state is State.LIVE else OWN_HISTORY for n, state in plan.items()}
        owned = max(1, len(self.leases.owned))
        count = max(1, self.settings.batch_size // owned)
        history = [n for n, at in shards.items() if at == OWN_HISTORY]
        if history:
            count = redelivery_count(count, max(self.streams.oldest_deliveries(n) for n in history))
        result = self.streams.read(
            shards, count, self.settings.batch_max_bytes, self.settings.max_entry_bytes
        )
        for n in result.lost_leases:
            self.leases.lost(n)
            self.states.lost({n})
        for n in result.drained_history:
            if self.states.history_drained(n):
                self._take_over(n)
        return self.processor.prepare(result.entries) if result.entries else None

    def _prefetch(self) -> None:
        """Read and prepare the next batch while the current one commits on the other thread."""
        if self.stop.requested or not self.states.may_read_ahead():
            return
        try:
            self.prefetched = self._read(self.states.next_read())
        except redis.RedisError as exc:
            # The read may still have delivered entries into our pending list: re-read our history next.
            log.warning("prefetch_failed", error=str(exc))
            self.states.reread_all()

    def _take_prefetched(self) -> PreparedBatch | None:
        """The prefetched batch, if all its shards are still ours and in order to read new entries.

        Otherwise it is dropped: its entries stay in our pending list, and a shard we still hold re-reads
        them from its history before anything newer, so its feeds stay in order.
        """
        batch, self.prefetched = self.prefetched, None
        if batch is None:
            return None
        shards = self._shards_of(batch)
        if self.states.still_valid(shards):
            return batch
        self.states.reread(shards)
        return None

    def _shards_of(self, batch: PreparedBatch) -> set[int]:
        return {n for n in range(self.keys.shards) if self.keys.shard(n) in batch.streams}

    def _take_over(self, n: int) -> None:
        """Claim what others left pending on shard n; ready once nobody else holds any of it.

        Claimed at once, however recently delivered: the lease says the shard is ours, so whoever held the
        entries can no longer read the shard, and Postgres's capture-time guard makes a commit of theirs
        still in flight harmless. Waiting for the entries to go idle would only stall the shard.
        """
        claimed, deleted = self.streams.claim_pending(n)
        if deleted:
            log.error("pending_entries_trimmed_before_reclaim", shard=n, lost=len(deleted))
            self.streams.record_stats({"lost_trimmed": len(deleted)})
            self.metrics.lost_before_reclaim(len(deleted))
        if claimed:
            log.info("entries_reclaimed", shard=n, count=claimed)
        self.states.claimed(n, claimed or self.streams.others_pending(n))
        if self.states.state(n) is State.LIVE:
            log.info("shard_ready", shard=n)

    def _process(self, batch: PreparedBatch) -> None:
        """Retry the batch until it is committed and acknowledged, or until it is someone else's.

        Transient failures never drop the batch. While retrying we keep our leases; if one is lost anyway
        (or a stop was asked), the batch is left pending and its shard's next owner reclaims it.
        """
        attempt = 0
        while True:
            # The commit thread inherits this thread's log context (stream, group, consumer).
            commit = self._committer.submit(contextvars.copy_context().run, self._commit, batch)
            if attempt == 0:
                self._prefetch()
            try:
                outcome, seconds = commit.result()
                self._record_metrics(batch, outcome, seconds)
                log.info(
                    "batch_committed", entries=len(batch.entries), bytes=batch.data_bytes, **outcome.counts
                )
                return
            except redis.RedisError as exc:
                classified = classify_redis_error(exc)
                if isinstance(classified, Refused):
                    raise classified from exc
                error = classified
            except Transient as exc:
                error = exc
            log.warning("batch_retrying", cause=error.cause, error=str(error), attempt=attempt)
            self.metrics.retried(error)
            if self.stop.requested:
                log.warning("batch_left_pending_for_reclaim", entries=len(batch.entries))
                return
            self._sleep(compute_backoff(attempt, base_s=0.1, cap_s=RETRY_CAP_S))
            attempt += 1
            try:
                # Shards above our share are only marked now: part of the batch may be committed already,
                # and their next owner would apply it again (and count it as duplicates).
                self._maintain_leases(force=True)
                self.memory.sample()  # an outage is when Redis fills: keep the estimate current
                # Without this the backlog gauges would freeze at their value from before the failure.
                self.metrics.refresh(self.leases.owned)
            except redis.RedisError:
                continue
            if self._shards_of(batch) - self.leases.owned:
                log.warning("batch_abandoned_lease_lost", entries=len(batch.entries))
                # The batch's entries on shards we still hold stay in our own pending list. Reading newer
                # entries there first would make them stale and skip their changes: re-read our history.
                self.states.reread(self._shards_of(batch))
                return

    def _record_metrics(self, batch: PreparedBatch, outcome: Outcome, seconds: float) -> None:
        # Metrics only observe: a failure there must never stop a consumer that has just committed, or it
        # would crash again on its next batch.
        try:
            self.metrics.batch_committed((p.envelope.ts_ms for p in batch.parsed), outcome.counts, seconds)
        except Exception as exc:
            log.error("metrics_failed", error=f"{type(exc).__name__}: {exc}")

    def _commit(self, batch: PreparedBatch) -> tuple[Outcome, float]:
        started = time.monotonic()
        outcome = self.processor.commit(batch)
        return outcome, time.monotonic() - started

    def _trim_if_due(self) -> None:
        if time.monotonic() < self._next_trim:
            return
        self._next_trim = time.monotonic() + self.settings.trim_interval_s
        for n in sorted(self.states.live):
            forced = trim(self.client, self.keys.shard(n), self.settings.stream_hard_cap).forced
            if forced:
                self.streams.record_stats({"forced_trimmed": forced})
            self.metrics.forced_trimmed.inc(forced)
            removed = self.streams.remove_idle_consumers(n, self.settings.consumer_expiry_ms)
            if removed:
                log.info("idle_consumers_removed", shard=n, consumers=removed)
        # One hash for all shards, swept by whoever owns shard 0.
        if 0 in self.states.live:
            expired = self.sweep.step()
            if expired:
                log.info("fingerprints_expired", count=expired, after_s=self.settings.fingerprint_expiry_s)

    def _release(self) -> None:
        try:
            self.leases.release_all()
        except redis.RedisError as exc:
            log.warning("lease_release_failed", error=str(exc))
        self._committer.shutdown()
        self.writer.discard()

    def _sleep(self, seconds: float) -> None:
        # Waiting on purpose is a sign of life, for the lease renewal.
        self.stop.sleep(seconds, self.leases.alive)


def _tune_garbage_collector() -> None:
    """Collect less often: a batch allocates hundreds of thousands of short-lived, acyclic objects.

    With the default thresholds the cyclic collector ran so often that it doubled the cost of decoding a
    snapshot. Everything a batch allocates is freed by reference counting when the batch ends, so rarer
    collections do not let memory grow with the backlog; objects alive at start are frozen out of them.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
