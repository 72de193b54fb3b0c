import Foundation
import Synchronization
import Testing

@testable import RecotapKeyd

/// The parts of the composition root that own resources and work: what the builder
/// opened is closed newest first, once; work a request starts runs as a child of one
/// service and is cancelled at shutdown.
@Suite("Composition: owned resources and request work")
struct CompositionTests {
    @Test("owned resources close newest first, each once; a released one is left to its new owner; a failing step closes what is open")
    func ownedResources() async throws {
        let closed = Mutex<[String]>([])
        let owned = OwnedResources()
        owned.own { closed.withLock { $0.append("inotify") } }
        let sockets = owned.own { closed.withLock { $0.append("sockets") } }
        owned.own { closed.withLock { $0.append("client") } }
        owned.release(sockets)
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            try await owned.step { throw Refused() }
        }
        #expect(closed.withLock { $0 } == ["client", "inotify"])
        await owned.closeAll()
        #expect(closed.withLock { $0 } == ["client", "inotify"], "nothing is closed twice")
        let value = try await owned.step { 42 }
        #expect(value == 42)
    }

    @Test("request work: everything submitted runs, in-flight work is cancelled at finish, and nothing is taken after it")
    func requestWork() async throws {
        let work = RequestWork()
        let ran = Mutex<[String]>([])
        let runner = Task { await work.run() }
        let started = AsyncStream.makeStream(of: Void.self)
        #expect(work.submit {
            started.continuation.yield()
            // Sleeps "forever" unless cancelled.
            try? await Task.sleep(for: .seconds(3600))
            ran.withLock { $0.append(Task.isCancelled ? "cancelled" : "slept") }
        })
        var iterator = started.stream.makeAsyncIterator()
        await iterator.next()
        #expect(work.submit { ran.withLock { $0.append("quick") } })
        work.finish()
        #expect(!work.submit { ran.withLock { $0.append("late") } })
        await runner.value
        #expect(Set(ran.withLock { $0 }) == ["cancelled", "quick"])
    }
}
