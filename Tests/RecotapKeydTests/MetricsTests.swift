import Foundation
import Synchronization
import Testing

@testable import RecotapKeyd

let havePromtool = FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool")

/// A scrape, read as Prometheus would: the samples by series as written
/// (`name{label="value",…}`), and the metric families its `# TYPE` lines declare.
struct Exposition {
    var samples: [String: Double] = [:]
    var families: [String: String] = [:]
    let text: String

    init(_ text: String) {
        self.text = text
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { families[String(parts[2])] = String(parts[3]) }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
    }

    subscript(_ series: String) -> Double? { samples[series] }

    /// The series of `name` (with their labels), e.g. every `recotap_keyd_key_info{…}`.
    func series(_ name: String) -> [String] {
        samples.keys.filter { $0 == name || $0.hasPrefix(name + "{") }.sorted()
    }
}

/// `promtool check metrics`: the exposition parses and follows Prometheus' naming and
/// help conventions (its exit status says so).
func promtoolCheck(_ text: String) async throws -> CommandResult {
    try await runCommand(["/usr/bin/promtool", "check", "metrics"], input: Data(text.utf8))
}

private let prefix = MetricDefinition.prefix

@Suite("metrics: /metrics, the TCP listener, the textfile (real binaries)", .enabled(if: haveCurl, "needs curl"))
struct MetricsTests {
    static let first = "rtk_metrics_first_0123456789"
    static let second = "rtk_metrics_second_987654321"

    private func scrape(_ served: ServedDaemon, as wrapper: [String] = []) async throws -> Exposition {
        let answer = try await served.curl("/metrics", as: wrapper)
        #expect(answer.status == 200, "\(answer.text)")
        #expect(answer.headers["content-type"] == KeydMetrics.contentType)
        let exposition = Exposition(answer.text)
        if havePromtool {
            let check = try await promtoolCheck(answer.text)
            #expect(check.status == 0, "promtool check metrics: \(check.output) \(check.stderr)")
        }
        return exposition
    }

    @Test("values follow a rotation, an outage, an invalidation and refused peers; every scrape passes promtool check metrics and declares exactly the documented families")
    func scenario() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.first, Self.second], socketMode: "0666",
            extra: "check:\n  report_min_interval: 0s\n  confirm_delay: 1s\n  interval: 2m")

        let start = try await scrape(served)
        // key_info has a series only while there is a key.
        let documented = Set((MetricDefinition.all + MetricDefinition.process).map(\.name))
        #expect(Set(start.families.keys) == documented.subtracting(["\(prefix)key_info"]))
        for definition in MetricDefinition.all + MetricDefinition.process where definition.name != "\(prefix)key_info" {
            #expect(start.families[definition.name] == definition.kind.rawValue, "\(definition.name)")
        }
        #expect(start["\(prefix)key_state{state=\"none\"}"] == 1)
        #expect(start["\(prefix)key_state{state=\"valid\"}"] == 0)
        #expect(start.series("\(prefix)key_info").isEmpty)
        #expect(start["\(prefix)key_activated_timestamp_seconds"] == 0)
        #expect(start["\(prefix)check_interval_seconds"] == 120)
        #expect(start["\(prefix)build_info{version=\"\(KeydVersion.current)\"}"] == 1)
        #expect((start["process_resident_memory_bytes"] ?? 0) > 1_000_000)
        #expect((start["process_open_fds"] ?? 0) > 3)
        let started = try #require(start["process_start_time_seconds"])
        #expect(abs(started - Date().timeIntervalSince1970) < 600, "start time \(started)")

        // A key arrives through the spool and is served.
        try await served.activate(Self.first)
        let one = try await scrape(served)
        #expect(Set(one.families.keys) == documented)
        let firstPrint = APIKey.fingerprint(of: Self.first)
        #expect(one["\(prefix)key_state{state=\"valid\"}"] == 1)
        #expect(one["\(prefix)key_state{state=\"none\"}"] == 0)
        #expect(one.series("\(prefix)key_info") == ["\(prefix)key_info{fingerprint=\"\(firstPrint)\",version=\"1\",source=\"spool\"}"])
        #expect(one["\(prefix)spool_verdicts_total{verdict=\"activated\"}"] == 1)
        #expect((one["\(prefix)api_requests_total{status_class=\"2xx\"}"] ?? 0) >= 1)
        #expect((one["\(prefix)key_served_total{socket=\"keyd\"}"] ?? 0) >= 1)
        let activated = try #require(one["\(prefix)key_activated_timestamp_seconds"])
        #expect(abs(activated - Date().timeIntervalSince1970) < 120)
        #expect((one["\(prefix)last_successful_check_timestamp_seconds"] ?? 0) >= activated - 1)

        // A rotation: the old key's info series is gone, the new one's is there.
        try await served.activate(Self.second)
        let two = try await scrape(served)
        let secondPrint = APIKey.fingerprint(of: Self.second)
        #expect(two.series("\(prefix)key_info") == ["\(prefix)key_info{fingerprint=\"\(secondPrint)\",version=\"2\",source=\"spool\"}"])
        #expect(two["\(prefix)spool_verdicts_total{verdict=\"activated\"}"] == 2)
        #expect((two["\(prefix)key_activated_timestamp_seconds"] ?? 0) >= activated)
        let servedBefore = try #require(two["\(prefix)key_served_total{socket=\"keyd\"}"])
        _ = try await served.curl("/v1/key")
        _ = try await served.curl("/v1/key")
        #expect(try await scrape(served)["\(prefix)key_served_total{socket=\"keyd\"}"] == servedBefore + 2)

        // An outage: counted as unreachable and 5xx; the last success stays where it was.
        let success = try #require(two["\(prefix)last_successful_check_timestamp_seconds"])
        served.mock.inject(.status(503))
        #expect(try await served.curl("/v1/check", method: "POST").json?["outcome"]?.string == "unreachable")
        let outage = try await scrape(served)
        #expect(outage["\(prefix)checks_total{outcome=\"unreachable\"}"] == 1)
        #expect(outage["\(prefix)api_requests_total{status_class=\"5xx\"}"] == 1)
        #expect(outage["\(prefix)last_successful_check_timestamp_seconds"] == success)
        #expect((outage["\(prefix)last_check_timestamp_seconds"] ?? 0) >= success)
        #expect(outage["\(prefix)check_duration_seconds_count"] == 1)
        #expect(outage["\(prefix)key_state{state=\"valid\"}"] == 1, "an outage is not an invalidation")

        // An invalidation: a 401, confirmed.
        served.mock.setValidKeys([])
        _ = try await served.curl("/v1/check", method: "POST")
        #expect(try await eventually(timeout: .seconds(15)) {
            (try? await self.scrape(served))?["\(prefix)key_invalidations_total"] == 1
        })
        let dead = try await scrape(served)
        #expect(dead["\(prefix)key_state{state=\"invalid\"}"] == 1)
        #expect(dead["\(prefix)key_state{state=\"valid\"}"] == 0)
        #expect(dead["\(prefix)checks_total{outcome=\"invalid\"}"] == 2, "the 401 and its confirmation")
        #expect(dead["\(prefix)api_requests_total{status_class=\"4xx\"}"] == 2)

        // Refused peers: counted per socket, on keyd.sock for /v1/key and for /metrics.
        if canDropToNobody {
            #expect(try await served.curl("/v1/key", as: asNobody()).status == 403)
            #expect(try await served.curl("/metrics", as: asNobody()).status == 403)
            if haveSocat {
                let refused = try await runCommand(asNobody() + ["/usr/bin/socat", "-u", "UNIX-CONNECT:" + served.credential, "-"])
                #expect(refused.stdout.isEmpty, "nobody got something from credential.sock")
            }
            #expect(try await eventually {
                let after = try await self.scrape(served)
                return after["\(prefix)access_denied_total{socket=\"keyd\"}"] == 2
                    && after["\(prefix)access_denied_total{socket=\"credential\"}"] == (haveSocat ? 1 : 0)
            })
        }
        // The key is never in a scrape.
        let last = try await served.curl("/metrics")
        #expect(!last.text.contains(Self.first) && !last.text.contains(Self.second))
        #expect(await served.finish() == 0)
    }

    @Test("metrics.readers lets a user read /metrics and nothing else; without it /metrics is for readers and admins")
    func readers() async throws {
        try #require(canDropToNobody, "needs root and setpriv")
        let served = try await ServedDaemon(
            validKeys: [Self.first], socketMode: "0666", extra: "metrics:\n  readers: { users: [nobody] }")
        try await served.activate(Self.first)
        _ = try await scrape(served, as: asNobody())
        #expect(try await served.curl("/v1/key", as: asNobody()).status == 403)
        let denied = try await scrape(served)
        #expect(denied["\(prefix)access_denied_total{socket=\"keyd\"}"] == 1)
        #expect(await served.finish() == 0)
    }

    @Test("a hostile spool file name cannot reach a label: key_info's source is one of a few words")
    func hostileSource() async throws {
        let served = try await ServedDaemon(validKeys: [Self.first])
        let name = "evil\"} 1\nrecotap_keyd_key_state{state=\\\"valid\\\".key"
        let path = served.spool + "/" + name
        _ = FileManager.default.createFile(atPath: path + ".tmp", contents: Data(Self.first.utf8))
        chmod(path + ".tmp", 0o600)
        rename(path + ".tmp", path)
        #expect(try await eventually(timeout: .seconds(15)) { (try? await served.curl("/v1/key"))?.status == 200 })
        let exposition = try await scrape(served)
        #expect(exposition.series("\(prefix)key_info") == [
            "\(prefix)key_info{fingerprint=\"\(APIKey.fingerprint(of: Self.first))\",version=\"1\",source=\"spool\"}"
        ])
        #expect(await served.finish() == 0)
    }

    @Test("the TCP listener: off by default; on loopback it serves /metrics only, with a cap on connections")
    func listener() async throws {
        // The daemon's own listening sockets: a child inherits this test process's
        // SwiftNIO sockets (they lack close-on-exec), which are not the daemon's.
        func ownPorts(_ daemon: ServedDaemon) throws -> Set<Int> {
            let inherited = try listeningTCPSockets(of: getpid())
            return Set(try listeningTCPSockets(of: daemon.daemon.process.processIdentifier)
                .filter { inherited[$0.key] == nil }.values)
        }
        let plain = try await ServedDaemon()
        let none = try ownPorts(plain)
        #expect(none.isEmpty, "no TCP listener by default, not \(none)")
        _ = await plain.finish()

        let port = try freeTCPPort()
        let served = try await ServedDaemon(
            validKeys: [Self.first], extra: "metrics:\n  listen: 127.0.0.1:\(port)")
        let ports = try ownPorts(served)
        #expect(ports.contains(port), "listening on \(ports)")
        let url = "http://127.0.0.1:\(port)"
        let metrics = try await runCommand(["/usr/bin/curl", "-sS", "-i", "--max-time", "10", url + "/metrics"])
        #expect(metrics.output.hasPrefix("HTTP/1.1 200"))
        let body = String(metrics.output[metrics.output.range(of: "\r\n\r\n")!.upperBound...])
        #expect(Exposition(body)["\(prefix)key_state{state=\"none\"}"] == 1)
        if havePromtool {
            #expect(try await promtoolCheck(body).status == 0)
        }
        try await served.activate(Self.first)
        for path in ["/v1/key", "/v1/status", "/healthz", "/"] {
            let other = try await runCommand(["/usr/bin/curl", "-sS", "-i", "--max-time", "10", url + path])
            #expect(other.output.hasPrefix("HTTP/1.1 404"), "\(path): \(other.output)")
            #expect(!other.output.contains(Self.first))
        }
        let post = try await runCommand(["/usr/bin/curl", "-sS", "-i", "--max-time", "10", "-X", "POST", url + "/metrics"])
        #expect(post.output.hasPrefix("HTTP/1.1 405"))

        // Each connection gets one answer and is closed: pipelined requests behind the
        // first are dropped (one render per connection).
        let pipelined = try await offload { () -> String in
            let fd = try tcpConnect(port: port)
            defer { close(fd) }
            let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            let bytes = Array(String(repeating: request, count: 50).utf8)
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return String(decoding: readAll(fd, within: 10), as: UTF8.self)
        }
        #expect(pipelined.components(separatedBy: "HTTP/1.1 200").count == 2, "one answer to 50 pipelined requests")
        #expect(pipelined.contains("Connection: close"))

        // A name that may have been rebound to loopback is refused (a web page's script).
        let rebound = try await runCommand(["/usr/bin/curl", "-sS", "-i", "--max-time", "10", "-H", "Host: attacker.example", url + "/metrics"])
        #expect(rebound.output.hasPrefix("HTTP/1.1 421"), "\(rebound.output.prefix(200))")
        let named = try await runCommand(["/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-H", "Host: localhost:\(port)", url + "/metrics"])
        #expect(named.output == "200")

        // Nobody can hold the listener: 16 connections that send nothing fill it; the
        // next one pushes out the oldest of them and is answered.
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<MetricsListener.maxConnections { idle.append(try tcpConnect(port: port)) }
        try await Task.sleep(for: .milliseconds(200))
        let again = try await runCommand(["/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url + "/metrics"])
        #expect(again.output == "200", "a scrape gets through a listener full of idle connections")
        // (Which one is oldest is the order the event loops registered them in.)
        let connections = idle
        let closed = try await offload { () -> Int in
            try? Task.checkCancellation()
            usleep(500_000)
            return connections.filter { readsEOF($0, within: 0) }.count
        }
        #expect(closed == 1, "one idle connection was closed to make room, not \(closed)")
        #expect(await served.finish() == 0)
    }

    @Test("the textfile is replaced atomically: a reader polling it during many rewrites only ever sees whole files")
    func textfile() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.first], extra: "check:\n  report_min_interval: 0s\nmetrics:\n  textfile: run/keyd.prom")
        let path = served.dir.file("run/keyd.prom")
        #expect(try await eventually { FileManager.default.fileExists(atPath: path) }, "written at start")
        try await served.activate(Self.first)

        // The reader polls on a thread of its own: a spinning loop on the cooperative
        // pool or on GCD's (as wide as the cores) would starve the other tests.
        let reader = FilePoller(path: path) { text in
            text.hasSuffix("\n") && text.contains("\(prefix)build_info")
                && text.contains("\(prefix)key_state{state=\"valid\"}") && text.contains("\(prefix)long_polls ")
        }
        for _ in 0..<40 {
            _ = try await served.curl("/v1/check", method: "POST")
        }
        let (reads, partial) = try await reader.stop()
        #expect(reads > 100, "only \(reads) reads")
        #expect(partial.isEmpty, "partial files: \(partial)")

        #expect(try await eventually {
            let now = Exposition((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
            return (now["\(prefix)checks_total{outcome=\"valid\"}"] ?? 0) >= 40
        }, "rewritten after the checks")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let file = Exposition(text)
        #expect(file.series("process_resident_memory_bytes").isEmpty, "node_exporter exports its own process metrics")
        #expect(fileMode(path) & 0o777 == 0o644)

        // A reload that changes check.* rewrites it without waiting for a check.
        let config = served.dir.file("keyd.yaml")
        let yaml = try String(contentsOfFile: config, encoding: .utf8)
        try yaml.replacingOccurrences(of: "report_min_interval: 0s", with: "report_min_interval: 0s\n  interval: 7m")
            .write(toFile: config, atomically: true, encoding: .utf8)
        served.daemon.signal(SIGHUP)
        #expect(try await eventually(timeout: .seconds(15)) {
            Exposition((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")["\(prefix)check_interval_seconds"] == 420
        }, "the textfile after a reload: \(served.daemon.output.suffix(300))")
        if havePromtool {
            #expect(try await promtoolCheck(text).status == 0)
        }
        #expect(!text.contains(Self.first))
        #expect(await served.finish() == 0)
    }
}

@Suite("metrics: configuration, names, rules")
struct MetricsUnitTests {
    @Test("metrics.listen takes IP literals and a port; a non-loopback address needs metrics.allow_remote", arguments: [
        ("127.0.0.1:9851", true, "127.0.0.1:9851"),
        ("127.1.2.3:9851", true, "127.1.2.3:9851"),
        ("localhost:9851", true, "127.0.0.1:9851"),
        ("[::1]:9851", true, "[::1]:9851"),
        ("0.0.0.0:9851", false, "0.0.0.0:9851"),
        ("192.0.2.7:9851", false, "192.0.2.7:9851"),
        ("[::]:9851", false, "[::]:9851"),
    ])
    func listenAddresses(text: String, loopback: Bool, shown: String) throws {
        let address = try #require(MetricsListenAddress(text))
        #expect(address.isLoopback == loopback)
        #expect(address.description == shown)
    }

    @Test("malformed metrics.listen values are refused", arguments: [
        "9851", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80", "example.com:80", "[::1]9851",
        "::1:9851", "127.0.0.1:80\n", "[127.0.0.1]:80",
    ])
    func badListen(text: String) {
        #expect(MetricsListenAddress(text) == nil)
    }

    @Test("the loader: off by default; a non-loopback listener and a textfile not ending in .prom are refused, naming the key")
    func loader() async throws {
        let dir = try TemporaryDirectory()
        func load(_ yaml: String) async throws(ConfigurationError) -> KeydConfiguration {
            let path = dir.file("k.yaml")
            _ = FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8))
            return try await ConfigurationLoader(filePath: path, fileRequired: true, environment: [:], flags: [:]).load()
        }
        func refusal(_ yaml: String) async -> ConfigurationError? {
            do {
                _ = try await load(yaml)
                return nil
            } catch {
                return error
            }
        }
        let defaults = try await load("")
        #expect(defaults.metrics.listen == nil)
        #expect(defaults.metrics.textfile == nil)
        #expect(defaults.metrics.allowRemote == false)
        let open = await refusal("metrics:\n  listen: 0.0.0.0:9851")
        #expect(open?.key == "metrics.listen")
        #expect(open?.description.contains("metrics.allow_remote") == true)
        let remote = try await load("metrics:\n  listen: 0.0.0.0:9851\n  allow_remote: true")
        #expect(remote.metrics.listen?.description == "0.0.0.0:9851")
        #expect(await refusal("metrics:\n  listen: example.com:80")?.key == "metrics.listen")
        #expect(await refusal("metrics:\n  textfile: /tmp/keyd.txt")?.key == "metrics.textfile")
        #expect(try await load("metrics:\n  textfile: keyd.prom").metrics.textfile == dir.file("keyd.prom"))
        #expect(try await load("metrics:\n  readers: { users: [nobody], groups: [prometheus] }").metrics.readers
            == .init(users: ["nobody"], groups: ["prometheus"]))
    }

    @Test("every metric is in the README's Monitoring table, named by Prometheus' conventions")
    func documented() throws {
        let readme = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        for definition in MetricDefinition.all {
            #expect(readme.contains("`\(definition.name)"), "README lacks \(definition.name)")
            #expect(definition.name.hasPrefix("recotap_keyd_"))
            #expect((definition.kind == .counter) == definition.name.hasSuffix("_total"), "\(definition.name)")
        }
    }

    @Test("the shipped alert rules pass promtool check rules and their unit tests", .enabled(if: havePromtool, "needs promtool"))
    func rules() async throws {
        let directory = repositoryRoot + "/contrib/prometheus"
        let check = try await runCommand(["/usr/bin/promtool", "check", "rules", directory + "/recotap-keyd.rules.yml"])
        #expect(check.status == 0, "\(check.output) \(check.stderr)")
        let test = try await runCommand(["/usr/bin/env", "-C", directory, "/usr/bin/promtool", "test", "rules", "recotap-keyd.rules.test.yml"])
        #expect(test.status == 0, "\(test.output) \(test.stderr)")
        let rules = try String(contentsOfFile: directory + "/recotap-keyd.rules.yml", encoding: .utf8)
        let tests = try String(contentsOfFile: directory + "/recotap-keyd.rules.test.yml", encoding: .utf8)
        // The unit tests check the thresholds at their edges: a shifted one fails them.
        for (original, mutated) in [(">= 3", ">= 4"), ("> 3600)", "> 3000)"), ("for: 15m", "for: 16m"), ("[30m]", "[10m]")] {
            let scratch = try TemporaryDirectory()
            #expect(rules.contains(original))
            _ = try scratch.write("recotap-keyd.rules.yml", rules.replacingOccurrences(of: original, with: mutated))
            _ = try scratch.write("recotap-keyd.rules.test.yml", tests)
            let failing = try await runCommand(["/usr/bin/env", "-C", scratch.path, "/usr/bin/promtool", "test", "rules", "recotap-keyd.rules.test.yml"])
            #expect(failing.status != 0, "the rule tests pass with \(original) changed to \(mutated)")
        }
        for line in rules.split(separator: "\n") where line.contains("- alert: ") {
            let name = line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)
            #expect(tests.contains("alertname: \(name)"), "\(name) has no unit test")
        }
    }
}

/// Reads a file over and over on a thread of its own until stopped, keeping (up to
/// three of) the contents `whole` refuses.
final class FilePoller: Sendable {
    private let stopping = Atomic<Bool>(false)
    private let result = Mutex<(reads: Int, partial: [String])>((0, []))
    private let finished = DispatchSemaphore(value: 0)

    init(path: String, whole: @escaping @Sendable (String) -> Bool) {
        let thread = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                    let bad = !whole(text)
                    result.withLock { result in
                        result.reads += 1
                        if bad, result.partial.count < 3 { result.partial.append(text) }
                    }
                }
                usleep(100)
            }
            finished.signal()
        }
        thread.start()
    }

    func stop() async throws -> (reads: Int, partial: [String]) {
        stopping.store(true, ordering: .relaxed)
        let finished = self.finished
        try await offload { finished.wait() }
        return result.withLock { $0 }
    }
}

// MARK: - TCP helpers

/// A port nobody listens on now (bound to port 0, read back, closed).
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

func tcpConnect(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
    }
    return fd
}

/// What the peer sends until it closes (or `seconds` pass without data).
func readAll(_ fd: Int32, within seconds: Int32) -> [UInt8] {
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, seconds * 1000) > 0 else { return data }
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return data }
        data += buffer[0..<count]
    }
}

/// Whether the peer closes the connection (a read returns 0 or fails) within `seconds`.
func readsEOF(_ fd: Int32, within seconds: Int32) -> Bool {
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, seconds * 1000) > 0 else { return false }
    var byte: UInt8 = 0
    return recv(fd, &byte, 1, 0) <= 0
}

/// The TCP sockets `pid` listens on, by inode, with their ports: its socket
/// descriptors matched against the kernel's tables of listening sockets.
func listeningTCPSockets(of pid: Int32) throws -> [String: Int] {
    var inodes: Set<String> = []
    let fds = "/proc/\(pid)/fd"
    for name in try FileManager.default.contentsOfDirectory(atPath: fds) {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: fds + "/" + name),
            target.hasPrefix("socket:[")
        {
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
    }
    var sockets: [String: Int] = [:]
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // local_address is field 1 (ADDR:PORT in hex), st field 3 (0A: listening), inode field 9.
            guard fields.count > 9, fields[3] == "0A", inodes.contains(String(fields[9])),
                let port = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) })
            else { continue }
            sockets[String(fields[9])] = port
        }
    }
    return sockets
}
