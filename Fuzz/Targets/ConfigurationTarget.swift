import Foundation
import RecotapKeyd

extension FuzzTarget {
    /// The configuration file and the environment, as an operator (or a tool writing
    /// the file) might get them wrong. Input: the YAML text, a NUL, then environment
    /// lines `NAME=VALUE`. The loader must accept or refuse — naming a key or the
    /// source — and never trap; what it accepts must be within the documented ranges.
    static let configuration = FuzzTarget(
        name: "configuration", summary: "ConfigurationLoader: YAML bytes and RECOTAP_KEYD_* variables"
    ) { bytes throws(FuzzFailure) in
        let parts = fields(bytes, limit: 2)
        var environment: [String: String] = [:]
        if parts.count > 1 {
            for line in String(decoding: parts[1], as: UTF8.self).split(separator: "\n") {
                let pair = line.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { continue }
                environment[String(pair[0])] = String(pair[1])
            }
        }
        let path = ConfigurationScratch.path
        guard FileManager.default.createFile(atPath: path, contents: Data(parts[0])) else {
            throw FuzzFailure("cannot write the scratch configuration file \(path)")
        }
        let loader = ConfigurationLoader(filePath: path, fileRequired: true, environment: environment)
        let outcome = blocking { () -> Result<KeydConfiguration, ConfigurationError> in
            do throws(ConfigurationError) { return .success(try await loader.load()) } catch { return .failure(error) }
        }
        switch outcome {
        case .success(let config):
            let schedule = config.check
            try check(schedule.interval >= .seconds(10) && schedule.interval <= .seconds(86_400), "check.interval \(schedule.interval)")
            try check(schedule.jitter >= 0 && schedule.jitter <= 0.5, "check.jitter \(schedule.jitter)")
            try check(schedule.backoffMin <= schedule.backoffMax, "backoff_min above backoff_max")
            try check(config.api.timeout >= .seconds(1) && config.api.timeout <= .seconds(300), "api.timeout \(config.api.timeout)")
            try check(config.sockets.mode & 0o600 == 0o600 && config.sockets.mode <= 0o777, "sockets.mode")
            if let listen = config.metrics.listen {
                try check(listen.isLoopback || config.metrics.allowRemote, "metrics.listen \(listen) off loopback")
                try check((1...65535).contains(listen.port), "metrics.listen port \(listen.port)")
                try check(MetricsListenAddress(listen.description) == listen, "metrics.listen \(listen) does not read back")
            }
            try check(config.metrics.textfile.map { $0.hasSuffix(".prom") } ?? true, "metrics.textfile")
            // The schedule's arithmetic on whatever was accepted.
            let timing = CheckTiming(check: schedule, random: { 0.999_999 })
            _ = timing.nextInterval()
            _ = timing.backoff(failures: Int.max)
            _ = timing.afterRateLimit(retryAfter: .seconds(Int64.max), failures: 1)
        case .failure(let error):
            let text = error.description
            try check(!text.isEmpty, "a refusal without words")
        }
    }
}

/// One scratch file per process for the configuration target.
enum ConfigurationScratch {
    static let path: String = {
        let directory = FileManager.default.temporaryDirectory.path + "/recotap-keyd-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/keyd.yaml"
    }()
}
