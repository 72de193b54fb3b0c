import Synchronization

/// What the daemon's builder opened — the inotify watch, the sockets, the API client —
/// each with how to close it, closed once each in the reverse order of opening: at
/// once when a later step of the start fails (``step(_:)``), else by
/// ``KeydDaemon/run()`` after the service group has ended, whichever way it ended.
/// One mechanism instead of a ladder of `catch` blocks that each must remember
/// everything opened before them.
final class OwnedResources: Sendable {
    private struct Entry: Sendable {
        var id: Int
        var close: @Sendable () async -> Void
    }

    private let entries = Mutex<(next: Int, open: [Entry])>((0, []))

    /// Owns a resource until ``closeAll()``, or until ``release(_:)`` says something
    /// else took it over. Returns the handle for ``release(_:)``.
    @discardableResult
    func own(_ close: @escaping @Sendable () async -> Void) -> Int {
        entries.withLock { state in
            state.next += 1
            state.open.append(Entry(id: state.next, close: close))
            return state.next
        }
    }

    /// Gives up a resource without closing it: what owns it now closes it.
    func release(_ handle: Int) {
        entries.withLock { $0.open.removeAll { $0.id == handle } }
    }

    /// Runs one step of the start; when it fails, everything owned so far is closed
    /// before the error goes on.
    func step<Value>(_ body: () async throws -> Value) async throws -> Value {
        do {
            return try await body()
        } catch {
            await closeAll()
            throw error
        }
    }

    /// Closes everything still owned, newest first; each only once.
    func closeAll() async {
        let open = entries.withLock { state in
            defer { state.open = [] }
            return state.open
        }
        for entry in open.reversed() { await entry.close() }
    }
}
