import Foundation

/// The load generator of `make bench`: one thread, `connections` Unix-socket
/// connections multiplexed with `poll(2)`, one request in flight on each. The same
/// client drives recotap-keyd, nginx and the plain SwiftNIO server, so the ratios
/// compare servers, not clients. Every answer is checked (status and body bytes).
struct LoadClient {
    enum Mode {
        /// HTTP/1.1 keep-alive: `GET path` again and again on each connection.
        case keepAlive(path: String)
        /// One connection per request: `request` (empty on credential.sock) is sent,
        /// the answer read until the server closes.
        case connectPerRequest(request: String)
    }

    struct Result {
        var requests: Int
        var seconds: Double
        /// Sorted, milliseconds.
        var latencies: [Double]
        var rate: Double { Double(requests) / seconds }
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
    }

    let socket: String
    let mode: Mode
    let connections: Int
    let requests: Int
    /// What every answer's body must be.
    let expectedBody: [UInt8]

    private final class Slot {
        var fd: Int32 = -1
        var buffer: [UInt8] = []
        var started: ContinuousClock.Instant = .now
        init() { buffer.reserveCapacity(4096) }
    }

    func run() throws -> Result {
        let slots = (0..<connections).map { _ in Slot() }
        var latencies: [Double] = []
        latencies.reserveCapacity(requests)
        var sent = 0
        let request: [UInt8]
        switch mode {
        case .keepAlive(let path): request = Array("GET \(path) HTTP/1.1\r\nHost: bench\r\n\r\n".utf8)
        case .connectPerRequest(let text): request = Array(text.utf8)
        }
        let keepAlive: Bool
        if case .keepAlive = mode { keepAlive = true } else { keepAlive = false }

        func start(_ slot: Slot) throws {
            if slot.fd < 0 { slot.fd = try Self.connect(socket) }
            slot.buffer.removeAll(keepingCapacity: true)
            slot.started = .now
            if !request.isEmpty {
                let written = request.withUnsafeBytes { send(slot.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard written == request.count else { throw BenchError("send failed on \(socket): errno \(errno)") }
            }
            sent += 1
        }

        let begin = ContinuousClock.now
        for slot in slots where sent < requests { try start(slot) }
        var fds = slots.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var chunk = [UInt8](repeating: 0, count: 16384)
        while latencies.count < requests {
            let ready = poll(&fds, nfds_t(fds.count), 10_000)
            guard ready > 0 else { throw BenchError("no answer from \(socket) within 10 s (errno \(errno))") }
            for index in fds.indices where fds[index].revents != 0 {
                let slot = slots[index]
                let count = recv(slot.fd, &chunk, chunk.count, 0)
                if count > 0 { slot.buffer.append(contentsOf: chunk[0..<count]) }
                guard count >= 0 else { throw BenchError("recv failed on \(socket): errno \(errno)") }
                let complete: Bool
                if keepAlive {
                    guard count > 0 else { throw BenchError("\(socket) closed a keep-alive connection") }
                    guard let answer = Self.parse(slot.buffer) else { continue }
                    try check(answer.status, slot.buffer[answer.bodyStart..<answer.end])
                    slot.buffer.removeFirst(answer.end)
                    complete = true
                } else {
                    guard count == 0 else { continue }
                    close(slot.fd)
                    slot.fd = -1
                    if request.isEmpty {
                        try check(200, slot.buffer[...])
                    } else {
                        guard let answer = Self.parse(slot.buffer) else { throw BenchError("incomplete answer from \(socket)") }
                        try check(answer.status, slot.buffer[answer.bodyStart..<answer.end])
                    }
                    complete = true
                }
                if complete {
                    latencies.append((ContinuousClock.now - slot.started).seconds * 1000)
                    if sent < requests {
                        try start(slot)
                        fds[index].fd = slot.fd
                    } else {
                        fds[index].fd = -1
                    }
                }
            }
        }
        let seconds = (ContinuousClock.now - begin).seconds
        for slot in slots where slot.fd >= 0 { close(slot.fd) }
        latencies.sort()
        return Result(requests: latencies.count, seconds: seconds, latencies: latencies)
    }

    private func check(_ status: Int, _ body: ArraySlice<UInt8>) throws {
        guard status == 200, body.elementsEqual(expectedBody) else {
            throw BenchError("unexpected answer from \(socket): status \(status), \(body.count) body bytes")
        }
    }

    /// Status, where the body starts and where the answer ends, once it is complete.
    /// Byte-level (no strings): the client must cost less than the servers it drives.
    static func parse(_ bytes: [UInt8]) -> (status: Int, bodyStart: Int, end: Int)? {
        bytes.withUnsafeBufferPointer { bytes -> (status: Int, bodyStart: Int, end: Int)? in
            let count = bytes.count
            guard count >= 16 else { return nil }
            var headerEnd = -1
            var index = 3
            while index < count {
                if bytes[index] == 10, bytes[index - 1] == 13, bytes[index - 2] == 10, bytes[index - 3] == 13 {
                    headerEnd = index + 1
                    break
                }
                index += 1
            }
            guard headerEnd > 0 else { return nil }
            // "HTTP/1.1 200 "
            let status = Int(bytes[9] &- 48) * 100 + Int(bytes[10] &- 48) * 10 + Int(bytes[11] &- 48)
            // A line starting "content-length:", any case.
            let name = Array("content-length:".utf8)
            var length = 0
            var line = 0
            while line < headerEnd - name.count {
                if bytes[line] == 10 {
                    var matches = true
                    for offset in 0..<name.count where bytes[line + 1 + offset] | 0x20 != name[offset] | 0x20 {
                        matches = false
                        break
                    }
                    if matches {
                        var digit = line + 1 + name.count
                        while bytes[digit] == 32 { digit += 1 }
                        while bytes[digit] >= 48 && bytes[digit] <= 57 {
                            length = length * 10 + Int(bytes[digit] - 48)
                            digit += 1
                        }
                        break
                    }
                }
                line += 1
            }
            guard count >= headerEnd + length else { return nil }
            return (status, headerEnd, headerEnd + length)
        }
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw BenchError("cannot connect to \(path): errno \(errno)")
        }
        return fd
    }
}
