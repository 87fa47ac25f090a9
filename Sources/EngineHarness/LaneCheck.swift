import COpenSSL
import Foundation

/// The 8-lane (multi-buffer) path against default OpenSSL. Each case queues
/// its operations together behind a blocker: a scalar operation that holds
/// the engine's one, slow worker, so that the worker then takes them all in
/// one go. The counters tell how many ran in 8-lane calls and in how many
/// calls; where the engine cannot run lanes (a build without crypto_mb, a CPU
/// without AVX-512 IFMA, MULTIBUFFER=0) none may, and every result must agree
/// all the same.
public enum LaneCheck {
    /// One worker, slow enough for a case to queue up behind its blocker, and
    /// lanes for any fill, so that every fill 1-8 is reachable.
    public static let settings = [("THREADS", "1"), ("WORKER_DELAY_USEC", "50000"), ("MULTIBUFFER_MIN_FILL", "1")]
    public static let restored = [("THREADS", "0"), ("WORKER_DELAY_USEC", "0"), ("MULTIBUFFER_MIN_FILL", "0")]
    public static let width = 8

    /// Whether this build and CPU have lanes (in use, or switched off by ctrl).
    public static func lanesExist(_ stats: EngineStats) -> Bool {
        stats.multibuffer == "in_use" || stats.multibuffer == "off_by_ctrl"
    }

    /// One operation in a job: its result, output and the errors it left, and the same from default OpenSSL.
    public struct Case {
        let label: String
        let body: () -> (result: Int32, output: [UInt8])
        let expected: () -> (result: Int32, output: [UInt8])
        /// Whether an 8-lane call may compute it (invalid inputs go to scalar code before the call).
        let laneable: Bool
        /// For results that are not deterministic (ECDSA, keygen): judges the
        /// engine's output in place of byte equality.
        var verify: ((Int32, [UInt8]) -> Bool)? = nil
    }

    final class Outcome: @unchecked Sendable {
        var result: Int32 = 0
        var output: [UInt8] = []
        var errors: [String] = []
    }

    static func errorNames() -> [String] { OpenSSLErrors.codes().map { "\($0.library)/\($0.reason)" } }

    /// Runs `cases` queued together behind a blocker and compares each with
    /// default OpenSSL: result, output and every error. `calls` maps an
    /// algorithm to the 8-lane calls its cases need when lanes run.
    public static func run(_ label: String, _ cases: [Case], calls: [String: Int], engine: LoadedEngine,
                           into report: inout CheckReport) throws {
        let outcomes = cases.map { _ in Outcome() }
        let bodies: [() -> Int32] = zip(cases, outcomes).map { item, outcome in
            { ERR_clear_error()
              let (result, output) = item.body()
              outcome.result = result
              outcome.output = output
              outcome.errors = errorNames()
              return result }
        }
        let laneable = cases.filter(\.laneable).count
        var before = try engine.stats(), after = before
        // The counts below hold only if every case was queued while the worker
        // was still on the blocker; on a slow machine it may have finished first.
        for _ in 0..<3 {
            before = try engine.stats()
            let blocker = try startBlocker(engine)
            let batch = try AsyncBatch.start(bodies, mode: .waitFD)
            let queuedBehind = try engine.stats().header["queued"] ?? 0
            _ = try blocker.finish()
            _ = try batch.finish()
            guard engine.waitUntilNothingInFlight() else {
                report.note(false, "\(label): operations still in flight")
                return
            }
            after = try engine.stats()
            if queuedBehind >= laneable { break }
        }
        var mismatches: [String] = []
        for (item, outcome) in zip(cases, outcomes) {
            ERR_clear_error()
            let expected = item.expected()
            let expectedErrors = errorNames()
            let agrees = item.verify.map { $0(outcome.result, outcome.output) }
                ?? (outcome.result == expected.result && outcome.output == expected.output)
            if !agrees || outcome.result != expected.result || outcome.errors != expectedErrors {
                mismatches.append("\(item.label): engine \(outcome.result) \(outcome.errors), default OpenSSL \(expected.result) \(expectedErrors)")
            }
        }
        let inUse = after.multibuffer == "in_use"
        let lanes = calls.keys.reduce(0) { $0 + after.count($1, "lanes") - before.count($1, "lanes") }
        let laneCalls = calls.keys.map { ($0, after.count($0, "lane_calls") - before.count($0, "lane_calls")) }
        let expectedCalls = calls.mapValues { inUse ? $0 : 0 }
        let callsRight = laneCalls.allSatisfy { expectedCalls[$0.0] == $0.1 }
        let lanesRight = lanes == (inUse ? laneable : 0)
        report.note(mismatches.isEmpty && callsRight && lanesRight,
                    "\(label): \(cases.count - mismatches.count)/\(cases.count) agree with default OpenSSL (result, output, errors); "
                    + "\(lanes) in 8-lane calls (expected \(inUse ? laneable : 0)), calls "
                    + laneCalls.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
                    + " (multibuffer \(after.multibuffer))")
        for mismatch in mismatches.prefix(4) { report.note(false, "  \(mismatch)") }
    }

    /// A scalar operation (RSA-1024 has no lanes) that the one worker is
    /// busy with, with nothing queued behind it yet, when this returns.
    static func startBlocker(_ engine: LoadedEngine) throws -> AsyncBatch {
        let key = try RSAKeyPair(bits: 1024)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let batch = try AsyncBatch.start(RSAPrivateOperation.jobBodies([operation], on: key.engineKey).bodies, mode: .waitFD)
        for _ in 0..<5000 {
            let header = try engine.stats().header
            if header["queued"] == 0 && header["busy_threads"] == 1 { return batch }
            usleep(1000)
        }
        throw HarnessError("the worker never took the blocker")
    }

    // MARK: Cases

    public static func rsa(_ operation: RSAPrivateOperation, _ key: RSAKeyPair, laneable: Bool = true) -> Case {
        Case(label: "RSA \(key.bits) \(operation)", body: { operation.perform(on: key.engineKey) },
             expected: { operation.perform(on: key.softwareKey) }, laneable: laneable)
    }

    /// An X25519 derive; its keys are made before the job, off its small stack.
    public static func x25519(_ privateKey: [UInt8], _ peer: [UInt8], engine: LoadedEngine, laneable: Bool = true) -> Case {
        let keys = ECXKeys(ECXVector.x25519, privateKey: privateKey, peer: peer)
        return Case(label: "X25519 derive", body: { keys.derive() },
                    expected: { engine.withSoftwareDefaults { keys.derive() } }, laneable: laneable)
    }

    final class ECXKeys: @unchecked Sendable {
        let key: OpaquePointer?
        let peer: OpaquePointer?
        init(_ vector: ECXVector, privateKey: [UInt8], peer: [UInt8]) {
            key = vector.privateKey(privateKey)
            self.peer = vector.publicKey(peer)
        }
        deinit { EVP_PKEY_free(key); EVP_PKEY_free(peer) }
        func derive() -> (Int32, [UInt8]) {
            guard let key, let peer else { return (-9, []) }
            return ECXVector.derive(key, peer)
        }
    }

    static let encrypt = "rsa_private_encrypt", decrypt = "rsa_private_decrypt", x25519Derive = "x25519_derive"

    /// Every section, on an engine set to `settings`; restores the defaults after.
    public static func runAll(engine: LoadedEngine) throws -> CheckReport {
        var report = CheckReport(section: "lanes")
        for (name, value) in settings { try engine.set(name, value) }
        defer { for (name, value) in restored { try? engine.set(name, value) } }
        try everyFill(engine, &report)
        try everyPaddingAndSize(engine, &report)
        try eightKeys(engine, &report)
        try x25519Lanes(engine, &report)
        try invalidInputs(engine, &report)
        try mixedKinds(engine, &report)
        try ecLanes(engine, &report)
        try ecdsaNoncesDiffer(engine, &report)
        return report
    }

    /// Fills 1 to 8 of RSA-2048 PKCS#1 signatures: one call each.
    public static func everyFill(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        let key = try RSAKeyPair(bits: 2048)
        for fill in 1...8 {
            let cases = (0..<fill).map { _ in rsa(.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key), key) }
            try run("RSA-2048 fill \(fill)", cases, calls: [encrypt: 1], engine: engine, into: &report)
        }
    }

    /// Each size with lanes, its sign paddings mixed in one call and its decrypt paddings in another.
    public static func everyPaddingAndSize(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        for bits in [2048, 3072, 4096] {
            let key = try RSAKeyPair(bits: bits)
            let signs = (0..<8).map { rsa(.random(.encrypt, padding: RSAPrivateOperation.signPaddings[$0 % 3], key: key), key) }
            try run("RSA-\(bits) signs, every padding", signs, calls: [encrypt: 1], engine: engine, into: &report)
            let decrypts = (0..<8).map { rsa(.random(.decrypt, padding: RSAPrivateOperation.decryptPaddings[$0 % 3], key: key), key) }
            try run("RSA-\(bits) decrypts, every padding", decrypts, calls: [decrypt: 1], engine: engine, into: &report)
        }
    }

    /// Eight different RSA-2048 keys in one call.
    public static func eightKeys(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        let keys = try (0..<8).map { _ in try RSAKeyPair(bits: 2048, fresh: true) }
        let cases = keys.map { rsa(.random(.encrypt, padding: RSA_PKCS1_PADDING, key: $0), $0) }
        try run("RSA-2048, eight keys in one call", cases, calls: [encrypt: 1], engine: engine, into: &report)
    }

    /// X25519 derives with eight key pairs, and one low-order peer among seven good ones.
    public static func x25519Lanes(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        let good = (0..<8).map { _ in x25519(randomBytes(32), randomBytes(32), engine: engine) }
        try run("X25519 fill 8", good, calls: [x25519Derive: 1], engine: engine, into: &report)
        var mixed = Array(good.prefix(7))
        mixed.insert(x25519(randomBytes(32), [UInt8](repeating: 0, count: 32), engine: engine, laneable: false), at: 3)
        try run("X25519, a low-order peer among seven", mixed, calls: [x25519Derive: 1], engine: engine, into: &report)

        // The top bit is ignored and u taken modulo p = 2^255 - 19 (RFC 7748). The
        // 8-lane code errs for some u that are nearly all one bits (the fuzzer
        // found two): those go to OpenSSL's code.
        var topBit = randomBytes(32); topBit[31] |= 0x80
        let allOnes = [UInt8](repeating: 0xff, count: 32)
        var pPlusNine = [UInt8](repeating: 0xff, count: 32); pPlusNine[0] = 0xed + 9; pPlusNine[31] = 0x7f
        var belowP = [UInt8](repeating: 0xff, count: 32); belowP[1] = 0xfa
        var dense = [UInt8](repeating: 0xff, count: 32); dense[0] = 0x06; dense[10] = 0xdf   // the fuzzer's second
        let nearTop = [allOnes, pPlusNine, belowP, dense].map { x25519(randomBytes(32), $0, engine: engine, laneable: false) }
        try run("X25519, peers with the top bit set, u >= p, nearly all ones", Array(good.prefix(3))
                + [x25519(randomBytes(32), topBit, engine: engine)] + nearTop,
                calls: [x25519Derive: 1], engine: engine, into: &report)
    }

    /// Bad inputs in full batches: each fails alone, with default OpenSSL's errors.
    public static func invalidInputs(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        let key = try RSAKeyPair(bits: 2048)
        var decrypts = (0..<6).map { _ in rsa(.random(.decrypt, padding: RSA_PKCS1_PADDING, key: key), key) }
        var corrupt = RSAPrivateOperation.random(.decrypt, padding: RSA_NO_PADDING, key: key).input
        corrupt[0] = 0x01   // below n, but no PKCS#1 padding after decryption
        decrypts.insert(rsa(RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_PADDING, input: corrupt), key), at: 2)
        decrypts.insert(rsa(RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_OAEP_PADDING, input: corrupt), key), at: 5)
        decrypts.append(rsa(RSAPrivateOperation(kind: .decrypt, padding: RSA_NO_PADDING,
                                                input: [UInt8](repeating: 0xFF, count: key.size)), key, laneable: false))
        try run("RSA-2048 decrypts, bad paddings and an input above n among six", decrypts,
                calls: [decrypt: 1], engine: engine, into: &report)

        var signs = (0..<6).map { _ in rsa(.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key), key) }
        signs.insert(rsa(RSAPrivateOperation(kind: .encrypt, padding: RSA_PKCS1_PADDING, input: randomBytes(key.size - 10)),
                         key, laneable: false), at: 1)
        signs.insert(rsa(RSAPrivateOperation(kind: .encrypt, padding: RSA_NO_PADDING, input: randomBytes(key.size - 1)),
                         key, laneable: false), at: 4)
        try run("RSA-2048 signs, an input too long for its padding among six", signs,
                calls: [encrypt: 1], engine: engine, into: &report)
    }

    /// RSA-2048 and RSA-4096 signs, RSA-2048 decrypts and X25519 derives
    /// queued together, interleaved: one call per kind, nothing mixed up.
    public static func mixedKinds(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        let small = try RSAKeyPair(bits: 2048), large = try RSAKeyPair(bits: 4096)
        var cases: [Case] = []
        for index in 0..<4 {
            cases.append(rsa(.random(.encrypt, padding: RSA_PKCS1_PADDING, key: small), small))
            cases.append(x25519(randomBytes(32), randomBytes(32), engine: engine))
            if index < 3 { cases.append(rsa(.random(.encrypt, padding: RSA_NO_PADDING, key: large), large)) }
            if index < 2 { cases.append(rsa(.random(.decrypt, padding: RSA_PKCS1_OAEP_PADDING, key: small), small)) }
        }
        try run("mixed kinds queued together", cases, calls: [encrypt: 2, decrypt: 1, x25519Derive: 1],
                engine: engine, into: &report)
    }

    // MARK: EC

    static let ecCurves = [NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1].map { ECCurves.Curve(nid: $0) }

    /// Keygen: the new key passes default OpenSSL's key check (its public key is its private key times G).
    public static func ecKeygen(_ curve: ECCurves.Curve) -> Case {
        let box = OwnedECKey(EC_KEY_new_by_curve_name(curve.nid))
        return Case(label: "\(curve) keygen", body: { (EC_KEY_generate_key(box.key), []) },
                    expected: { (1, []) }, laneable: true,
                    verify: { result, _ in result == 1 && EC_KEY_check_key(box.key) == 1
                        && EC_KEY_get0_private_key(box.key) != nil })
    }

    /// ECDH with a fresh peer: byte-equal with default OpenSSL's secret.
    public static func ecdh(_ key: ECKeyPair) -> Case {
        let peer = OwnedECKey(EC_KEY_new_by_curve_name(key.curve.nid))
        EC_KEY_set_method(peer.key, EC_KEY_OpenSSL())
        EC_KEY_generate_key(peer.key)
        let point = EC_KEY_get0_public_key(peer.key)
        return Case(label: "\(key.curve) ECDH", body: { _ = peer; return ECKeyPair.derive(key.engineKey, peer: point) },
                    expected: { ECKeyPair.derive(key.softwareKey, peer: point) }, laneable: true)
    }

    /// ECDSA of `digest` (any length: cut to the order as OpenSSL cuts it): verified by default OpenSSL.
    public static func ecdsa(_ key: ECKeyPair, digest: [UInt8]) -> Case {
        Case(label: "\(key.curve) ECDSA (\(digest.count)-byte digest)", body: {
            guard let signature = ECDSA_do_sign(digest, Int32(digest.count), key.engineKey) else { return (0, []) }
            defer { ECDSA_SIG_free(signature) }
            return (1, SelfCheck.derSignature(signature))
        }, expected: { (1, []) }, laneable: true,
        verify: { result, der in result == 1 && SelfCheck.verify(der, digest: digest, key: key.softwareKey) })
    }

    /// ECDSA_sign_setup in lanes, then a signature with its kinv and r (scalar: the caller's nonce).
    public static func ecdsaSetup(_ key: ECKeyPair) -> Case {
        let digest = randomBytes(32)
        return Case(label: "\(key.curve) ECDSA_sign_setup", body: {
            var kinv: OpaquePointer?, r: OpaquePointer?
            guard ECDSA_sign_setup(key.engineKey, nil, &kinv, &r) == 1 else { return (0, []) }
            defer { BN_clear_free(kinv); BN_free(r) }
            guard let signature = ECDSA_do_sign_ex(digest, Int32(digest.count), kinv, r, key.engineKey) else { return (0, []) }
            defer { ECDSA_SIG_free(signature) }
            return (BN_cmp(ECDSA_SIG_get0_r(signature), r) == 0 ? 1 : 2, SelfCheck.derSignature(signature))
        }, expected: { (1, []) }, laneable: true,
        verify: { result, der in result == 1 && SelfCheck.verify(der, digest: digest, key: key.softwareKey) })
    }

    /// Each lane kind on P-256, P-384 and P-521, eight at a time.
    public static func ecLanes(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        for curve in ecCurves {
            let key = try ECKeyPair(curve: curve, mode: .sync)
            try run("\(curve) keygen", (0..<8).map { _ in ecKeygen(curve) }, calls: ["ec_keygen": 1],
                    engine: engine, into: &report)
            try run("\(curve) ECDH", (0..<8).map { _ in ecdh(key) }, calls: ["ecdh_derive": 1],
                    engine: engine, into: &report)
            let digests = [20, 32, 48, 64, 32, 28, 48, 66].map { randomBytes($0) }
            try run("\(curve) ECDSA, digests of 20 to 66 bytes", digests.map { ecdsa(key, digest: $0) },
                    calls: ["ecdsa_sign": 1], engine: engine, into: &report)
            try run("\(curve) ECDSA_sign_setup", (0..<8).map { _ in ecdsaSetup(key) },
                    calls: ["ecdsa_sign_setup": 1], engine: engine, into: &report)
        }
    }

    /// One digest signed eight times in one call: eight different nonces, so eight different r.
    public static func ecdsaNoncesDiffer(_ engine: LoadedEngine, _ report: inout CheckReport) throws {
        for curve in ecCurves {
            let key = try ECKeyPair(curve: curve, mode: .sync)
            let digest = randomBytes(32)
            let cases = (0..<8).map { _ in ecdsa(key, digest: digest) }
            let boxes = cases.map { _ in OutputBox() }
            let bodies: [() -> Int32] = zip(cases, boxes).map { item, box in
                { let (result, output) = item.body(); box.output = output; return result }
            }
            let blocker = try startBlocker(engine)
            let batch = try AsyncBatch.start(bodies, mode: .waitFD)
            _ = try blocker.finish()
            _ = try batch.finish()
            let rs = Set(boxes.map { rOf($0.output) })
            let verified = boxes.filter { SelfCheck.verify($0.output, digest: digest, key: key.softwareKey) }.count
            report.note(rs.count == 8 && verified == 8,
                        "\(curve): one digest signed 8 times together: \(rs.count) different r, \(verified) verify")
        }
    }

    static func rOf(_ der: [UInt8]) -> [UInt8] {
        der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let signature = d2i_ECDSA_SIG(nil, &cursor, der.count) else { return [] }
            defer { ECDSA_SIG_free(signature) }
            var bytes = [UInt8](repeating: 0, count: 66)
            let length = BN_bn2bin(ECDSA_SIG_get0_r(signature), &bytes)
            return Array(bytes.prefix(Int(length)))
        }
    }

    /// An EC_KEY a case owns, freed with it.
    final class OwnedECKey: @unchecked Sendable {
        let key: OpaquePointer?
        init(_ key: OpaquePointer?) { self.key = key }
        deinit { EC_KEY_free(key) }
    }
}
