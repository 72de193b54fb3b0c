import Foundation
import Synchronization

/// The active key as last committed to the store, readable without a trip through the
/// store's actor; the long polls waiting for it to change; and the subscriptions
/// (``changes()``) that follow it — the checker is one.
///
/// ``KeyStore`` publishes here once after every committed transaction that can touch
/// the active key (activation, a check that changes its state), so what the sockets
/// serve and what the checker checks is never ahead of (or behind) the database. This
/// is the one published copy of the active key and its state: no component polls the
/// store for it. The version of a key is its store id; it only ever grows. Version 0
/// means "no key".
public final class CurrentKey: Sendable {
    public typealias Waiter = @Sendable (KeyRecord?) -> Void

    private struct State {
        var record: KeyRecord?
        var waiters: [UInt64: (after: Int64, resume: Waiter)] = [:]
        var nextToken: UInt64 = 0
        var subscribers: [UInt64: WeakSubscription] = [:]
    }
    private struct WeakSubscription {
        weak var subscription: Subscription?
    }
    private let state = Mutex(State())

    public init() {}

    /// The active key, with its secret; `nil` when there is none.
    public var record: KeyRecord? { state.withLock { $0.record } }

    public var version: Int64 { state.withLock { $0.record?.id ?? 0 } }

    /// Replaces the snapshot; waiters whose version differs are answered, and every
    /// subscription is handed the record.
    func publish(_ record: KeyRecord?) {
        let (due, subscribers) = state.withLock { state -> ([Waiter], [Subscription]) in
            state.record = record
            let version = record?.id ?? 0
            let due = state.waiters.filter { $0.value.after != version }
            for token in due.keys { state.waiters.removeValue(forKey: token) }
            state.subscribers = state.subscribers.filter { $0.value.subscription != nil }
            return (due.map(\.value.resume), state.subscribers.values.compactMap(\.subscription))
        }
        for resume in due { resume(record) }
        for subscription in subscribers { subscription.deliver(record) }
    }

    /// A subscription to the active key: it yields the current record first, then the
    /// record after every commit that touches the active key. It holds only the newest
    /// record not yet taken (the key's state, not a log of changes), so a consumer
    /// that falls behind skips to the present instead of queueing. Subscribers may be
    /// many; each has its own subscription. It ends when dropped.
    public func changes() -> Subscription {
        let subscription = Subscription()
        state.withLock { state in
            subscription.deliver(state.record)
            state.nextToken += 1
            state.subscribers[state.nextToken] = WeakSubscription(subscription: subscription)
        }
        return subscription
    }

    /// One consumer's view of ``CurrentKey/changes()``: an `AsyncSequence` of records
    /// (`nil`: no active key) whose iteration ends when its task is cancelled; and,
    /// for a consumer that must act on the latest commit before it answers anything,
    /// ``poll()`` takes the pending record without waiting.
    public final class Subscription: AsyncSequence, AsyncIteratorProtocol, Sendable {
        public typealias Element = KeyRecord?

        /// `.some(record)`: a record not yet taken.
        private let pending = Mutex<KeyRecord??>(.none)
        /// Rung when a record is delivered.
        private let delivered = Wakeup()

        fileprivate init() {}

        fileprivate func deliver(_ record: KeyRecord?) {
            pending.withLock { $0 = .some(record) }
            delivered.ring()
        }

        /// The record published since the last one taken, if any (`.some(nil)`: the
        /// active key went away).
        public func poll() -> KeyRecord?? {
            pending.withLock { pending in
                defer { pending = .none }
                return pending
            }
        }

        /// Returns once a record is pending (without taking it), or when the task is
        /// cancelled. One task waits at a time.
        public func changed() async {
            while !Task.isCancelled, pending.withLock({ $0 == nil }) {
                await delivered.wait()
            }
        }

        public func next() async -> KeyRecord?? {
            while !Task.isCancelled {
                if let record = poll() { return record }
                await changed()
            }
            return nil
        }

        public func makeAsyncIterator() -> Subscription { self }
    }

    /// Calls `resume` once the active key's version differs from `after`. Returns `nil`
    /// (and does not call `resume`) when it already differs: the caller answers at
    /// once with ``record``. Otherwise returns a token for ``cancelWait(_:)``.
    public func waitForChange(after: Int64, _ resume: @escaping Waiter) -> UInt64? {
        state.withLock { state -> UInt64? in
            guard (state.record?.id ?? 0) == after else { return nil }
            state.nextToken += 1
            state.waiters[state.nextToken] = (after, resume)
            return state.nextToken
        }
    }

    /// Forgets a waiter (timed out, or its connection closed). Returns `false` when it
    /// was already answered.
    @discardableResult
    public func cancelWait(_ token: UInt64) -> Bool {
        state.withLock { $0.waiters.removeValue(forKey: token) != nil }
    }

    public var waiting: Int { state.withLock { $0.waiters.count } }
}
