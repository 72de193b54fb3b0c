import Foundation
import Synchronization

/// The active key as last committed to the store, readable without a trip through the
/// store's actor, and the long polls waiting for it to change.
///
/// ``KeyStore`` publishes here after every committed transaction that can touch the
/// active key, so what the sockets serve is never ahead of (or behind) the database.
/// The version of a key is its store id; it only ever grows. Version 0 means "no key".
public final class CurrentKey: Sendable {
    public typealias Waiter = @Sendable (KeyRecord?) -> Void

    private struct State {
        var record: KeyRecord?
        var waiters: [UInt64: (after: Int64, resume: Waiter)] = [:]
        var nextToken: UInt64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// The active key, with its secret; `nil` when there is none.
    public var record: KeyRecord? { state.withLock { $0.record } }

    public var version: Int64 { state.withLock { $0.record?.id ?? 0 } }

    /// Replaces the snapshot; waiters whose version differs are answered.
    func publish(_ record: KeyRecord?) {
        let due = state.withLock { state -> [Waiter] in
            state.record = record
            let version = record?.id ?? 0
            let due = state.waiters.filter { $0.value.after != version }
            for token in due.keys { state.waiters.removeValue(forKey: token) }
            return due.map(\.value.resume)
        }
        for resume in due { resume(record) }
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
