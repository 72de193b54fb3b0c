import Foundation

/// Polls `condition` every 5 ms until it holds; returns how long that took, or nil
/// after `timeout`.
func waitUntil(timeout: Duration, _ condition: () async throws -> Bool) async rethrows -> Duration? {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if try await condition() { return ContinuousClock.now - start }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return nil
}

/// Whether `condition` came to hold within `timeout`.
func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws -> Bool {
    try await waitUntil(timeout: timeout, condition) != nil
}

/// The same, for synchronous tests.
func eventuallySync(timeout: Duration = .seconds(10), _ condition: () -> Bool) throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return false
}
