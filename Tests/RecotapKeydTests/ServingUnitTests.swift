import Foundation
import Testing

@testable import RecotapKeyd

@Suite("Serving: the parts (no sockets)")
struct ServingUnitTests {
    @Test("systemd's LoadCredential= peer address names the unit and credential; other addresses name nothing")
    func unitAddress() {
        let parsed = Peer.systemdUnit(fromAbstractName: "a1b2c3d4e5f60718/unit/billing-sync.service/recotap-api-key")
        #expect(parsed?.unit == "billing-sync.service")
        #expect(parsed?.credentialID == "recotap-api-key")
        for name in ["", "random", "x/unit//id", "x/unit/a.service", "x/notunit/a.service/id", "x/unit/a.service/id/extra"] {
            #expect(Peer.systemdUnit(fromAbstractName: name) == nil, "\(name)")
        }
    }

    @Test("roles: root and the daemon's own uid are admins; lists by uid, primary and supplementary group; units alone decide for LoadCredential")
    func roles() {
        var policy = AccessPolicy(
            access: .init(
                readers: .init(users: ["4001"], groups: ["5001"]), admins: .init(users: ["4002"], groups: ["5002"]),
                units: ["ok.service"]),
            ownUID: 999)
        #expect(policy.unresolved.isEmpty)
        #expect(policy.socketGroup == 5001)
        #expect(policy.role(uid: 0, groups: { [] }) == .admin)
        #expect(policy.role(uid: 999, groups: { [] }) == .admin)
        #expect(policy.role(uid: 4002, groups: { [] }) == .admin)
        #expect(policy.role(uid: 4001, groups: { [] }) == .reader)
        #expect(policy.role(uid: 7000, groups: { [7000, 5001] }) == .reader)
        #expect(policy.role(uid: 7000, groups: { [5001, 5002] }) == .admin)
        #expect(policy.role(uid: 7000, groups: { [7000] }) == AccessRole.none)
        #expect(policy.mayReceiveCredential(Peer(pid: 1, uid: 0, gid: 0, unit: "ok.service")))
        #expect(!policy.mayReceiveCredential(Peer(pid: 1, uid: 0, gid: 0, unit: "other.service")), "root, but the unit decides")
        policy.units = []
        #expect(!policy.mayReceiveCredential(Peer(pid: 1, uid: 0, gid: 0, unit: "ok.service")))

        let unknown = AccessPolicy(access: .init(readers: .init(users: ["no-such-user-x"], groups: ["no-such-group-x"]), admins: .init(users: [], groups: []), units: []))
        #expect(unknown.unresolved == ["user no-such-user-x", "group no-such-group-x"])
        #expect(unknown.socketGroup == nil)
    }

    @Test("the role comes from the kernel's uid, gid and groups alone: never from the pid's /proc or the user database")
    func roleFromKernelValues() {
        var access = KeydConfiguration.defaults.access
        access.readers.users = []
        access.readers.groups = ["5001"]
        access.admins.groups = ["5002"]
        let policy = AccessPolicy(access: access, ownUID: 999)
        // This very process (root, in whatever groups) as the pid: it must not count.
        let withThisPID = Peer(pid: getpid(), uid: 7000, gid: 7000)
        #expect(policy.role(of: withThisPID) == AccessRole.none, "the pid's process does not lend its groups")
        #expect(policy.role(of: Peer(pid: 0, uid: 7000, gid: 7000, supplementaryGroups: [5001])) == .reader)
        #expect(policy.role(of: Peer(pid: 0, uid: 7000, gid: 5002)) == .admin, "the primary gid counts")
        #expect(policy.role(of: Peer(pid: 0, uid: 7000, gid: 7000, supplementaryGroups: [100, 5002])) == .admin)
        let zero = Peer(pid: 0, uid: 7000, gid: 7000, supplementaryGroups: [0, 0, 0])
        #expect(zero.groups == [7000], "an unused slot (0) is not the root group")
        #expect(Peer(pid: 0, uid: 7000, gid: 0).groups == [0], "root as the primary gid counts")
        #expect(Peer(pid: getpid(), uid: 0, gid: 0).comm != nil, "comm is still read, for the log")
    }

    @Test("CurrentKey: waiters are answered on a new version only; cancelled ones never")
    func currentKey() {
        let current = CurrentKey()
        #expect(current.version == 0)
        let answered = Mutex<[Int64]>([])
        #expect(current.waitForChange(after: 5) { _ in } == nil, "already different: answer at once")
        let token = current.waitForChange(after: 0) { record in answered.withLock { $0.append(record?.id ?? -1) } }
        let cancelled = current.waitForChange(after: 0) { _ in answered.withLock { $0.append(-99) } }
        #expect(token != nil && cancelled != nil)
        #expect(current.cancelWait(cancelled!))
        current.publish(nil)
        #expect(answered.withLock { $0 }.isEmpty, "same version: nobody answered")
        let record = KeyRecord(
            id: 1, fingerprint: "abc", key: nil, source: "t", status: .active, state: .valid, addedAt: Date(),
            activatedAt: nil, retiredAt: nil, retireReason: nil, lastVerifiedAt: nil, invalidSince: nil, secretErasedAt: nil)
        current.publish(record)
        #expect(answered.withLock { $0 } == [1])
        #expect(!current.cancelWait(token!), "already answered")
        #expect(current.waiting == 0)
    }

    @Test("the prepared GET /v1/key answer carries the key's age: rebuilt when the whole second changes, shared within it")
    func preparedAnswerAge() throws {
        let added = Date(timeIntervalSince1970: 1_800_000_000)
        let record = KeyRecord(
            id: 3, fingerprint: "0123456789ab", key: nil, source: "test", status: .active, state: .valid, addedAt: added,
            activatedAt: added, retiredAt: nil, retireReason: nil, lastVerifiedAt: added, invalidSince: nil, secretErasedAt: nil)
        let answers = PreparedKeyAnswers()
        func age(_ seconds: Double) -> String? {
            answers.answer(for: record, secret: "rtk_x", now: added.addingTimeInterval(seconds)).preparedHead?.headers.first(name: "X-Key-Age")
        }
        #expect(age(0) == "0")
        #expect(age(0.9) == "0")
        #expect(age(86_400 * 12 + 5) == "1036805")
        #expect(age(-5) == "0", "a clock set back never gives a negative age")
    }

    @Test("JSON bodies: snake-case names, sorted keys, ISO 8601 times, Nullable fields kept as null, plain optionals left out; read back")
    func json() {
        let verdict = Wire.SpoolVerdict(
            file: "a/b \"x\"\n\u{1}", at: Date(timeIntervalSince1970: 0), verdict: "rejected", reason: nil, fingerprint: "abc")
        let text = WireJSON.encode(verdict)
        #expect(text == #"{"at":"1970-01-01T00:00:00Z","file":"a/b \"x\"\n\u0001","fingerprint":"abc","reason":null,"verdict":"rejected"}"#)
        #expect(WireJSON.decode(Wire.SpoolVerdict.self, from: text) == verdict)
        #expect(WireJSON.decode(Wire.SpoolVerdict.self, from: text.replacingOccurrences(of: #","reason":null"#, with: "")) == verdict)
        var failure = Wire.Failure(error: "not_active", message: "m")
        #expect(WireJSON.encode(failure) == #"{"error":"not_active","message":"m"}"#)
        failure.activeFingerprint = "0123456789ab"
        #expect(WireJSON.encode(failure) == #"{"active_fingerprint":"0123456789ab","error":"not_active","message":"m"}"#)
        #expect(WireJSON.decode(Wire.Failure.self, from: "not json") == nil)
    }
}

import Synchronization
