import NIOCore
import NIOHTTP1
import RecotapKeyd

extension FuzzTarget {
    /// The routes on structured input, past the HTTP parser: any method, path, query,
    /// headers and body, from each kind of peer.
    ///
    /// Input: a byte choosing the peer, then NUL-separated method, path (with query),
    /// header lines (`Name: value`, separated by `\n`) and body.
    static let routes = FuzzTarget(name: "routes", summary: "APIRoutes: method, path, query, headers, body") { bytes throws(FuzzFailure) in
        guard let first = bytes.first else { return }
        let fixture = ServingFixture.shared
        let peer = ServingFixture.peers[Int(first) % ServingFixture.peers.count]
        let parts = fields(Array(bytes.dropFirst()), limit: 4)
        let method = HTTPMethod(rawValue: String(decoding: parts[0], as: UTF8.self))
        let uri = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : "/"
        var headers = HTTPHeaders()
        if parts.count > 2 {
            for line in String(decoding: parts[2], as: UTF8.self).split(separator: "\n") {
                // What the HTTP decoder could deliver: a token for a name (HTTPHeaders
                // requires ASCII), a value without line breaks.
                let pair = line.split(separator: ":", maxSplits: 1)
                guard pair.count == 2, !pair[0].isEmpty,
                    pair[0].utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != UInt8(ascii: ":") }),
                    !pair[1].utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 })
                else { continue }
                headers.add(name: String(pair[0]), value: String(pair[1]))
            }
        }
        let body = ByteBuffer(bytes: parts.count > 3 ? parts[3] : [])
        let request = APIRequest(head: HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers), body: body)
        let role = fixture.context.policy.role(of: peer)
        let result = APIRoutes(context: fixture.context).route(request, peer: peer, role: role)
        switch result {
        case .respond(let response):
            try checkResponse(response, to: request, role: role)
        case .later(let work):
            try checkResponse(blocking(work), to: request, role: role)
        case .longPoll(let after, let wait, _):
            try check(role >= .reader, "a long poll for a peer with no role")
            try check(after >= 0, "a long poll after version \(after)")
            try check(wait >= .zero && wait <= fixture.context.limits.maxWait, "a long poll of \(wait)")
        }
    }

    /// Every answer is a real status, an error is the documented JSON shape, and a
    /// peer with no role never sees the key.
    static func checkResponse(_ response: APIResponse, to request: APIRequest, role: AccessRole) throws(FuzzFailure) {
        let code = Int(response.status.code)
        if role == .none, let body = response.body {
            try check(!String(buffer: body).contains(ServingFixture.key.revealSecret()), "the key, to a peer with no role")
        }
        try check((100...599).contains(code), "status \(code)")
        if code >= 400 {
            let text = response.body.map { String(buffer: $0) } ?? ""
            guard WireJSON.decode(Wire.Failure.self, from: text) != nil else { throw FuzzFailure("\(code) to \(request.summary) without {error, message}: \(text)") }
        }
        if let body = response.body {
            try check(body.readableBytes <= 64 * 1024, "an answer of \(body.readableBytes) bytes")
        }
    }
}
