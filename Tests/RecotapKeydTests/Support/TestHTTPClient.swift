import Foundation

/// A deliberately small HTTP/1.1 client over a plain TCP socket: one request per
/// connection (`Connection: close`), read to EOF. Independent of the code under test.
struct TestHTTPResponse {
    var status: Int
    var headers: [String: String]
    var body: Data

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    var text: String { String(decoding: body, as: UTF8.self) }
}

enum TestHTTPError: Error {
    case connectFailed(Int32)
    case closedWithoutResponse
    case malformed(String)
}

func httpRequest(
    port: Int, method: String = "GET", path: String, headers: [String: String] = [:], body: Data = Data(),
    timeoutSeconds: Int = 10
) throws -> TestHTTPResponse {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestHTTPError.connectFailed(errno) }
    defer { close(fd) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestHTTPError.connectFailed(errno) }

    var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    if !body.isEmpty || method == "POST" || method == "PUT" { request += "Content-Length: \(body.count)\r\n" }
    request += "\r\n"
    let bytes = Array(request.utf8) + Array(body)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }

    var received = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        received.append(contentsOf: buffer[0..<count])
    }
    guard !received.isEmpty else { throw TestHTTPError.closedWithoutResponse }
    guard let split = received.range(of: Data("\r\n\r\n".utf8)) else { throw TestHTTPError.malformed("no header end") }
    let head = String(decoding: received[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
    let statusParts = head[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw TestHTTPError.malformed(head[0]) }
    var responseHeaders: [String: String] = [:]
    for line in head.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        responseHeaders[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return TestHTTPResponse(status: status, headers: responseHeaders, body: Data(received[split.upperBound...]))
}
