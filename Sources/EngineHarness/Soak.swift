import COpenSSL
import Foundation

/// Mixed operations through the engine for as long as asked, each checked
/// against default OpenSSL: X25519 and P-256 ECDH (byte-equal secrets),
/// P-256 ECDSA (verified), RSA 1024/2048 signatures and RSA 2048 OAEP
/// decryption (byte-equal), P-256 keygen (EC_KEY_check_key).
///
/// The event loop runs rounds of 1 to 64 jobs at once, each round woken by
/// wait fds or by callbacks, some with forced spurious resumes; between
/// rounds the pool is reshaped at random (threads, queue depth: a one-slot
/// queue makes jobs meet it full) and sync offload is switched. Meanwhile a
/// second application thread calls the same operations outside any job
/// (inline, or blocking on the pool when sync offload is on).
///
/// Between rounds the 8-lane path is switched and its fill threshold set at
/// random (1 to 8, or the measured crossover), so lanes of every fill run.
///
/// Exactly once: per algorithm, operations offloaded plus computed inline
/// must equal the operations the soak issued, every offloaded one must have
/// been handed back by a worker, and nothing may be left in flight.
public enum Soak {
    public struct Report {
        public var operations = 0
        public var rounds = 0
        public var spuriousRounds = 0
        public var reshapes = 0
        public var seconds = 0.0
        public var issued: [String: Int] = [:]
        public var mismatches: [String] = []
        /// Counter deltas per algorithm: offloaded, completed, inline, retried.
        public var counted: [String: [String: Int]] = [:]
        public var accountingErrors: [String] = []
        public var passed: Bool { mismatches.isEmpty && accountingErrors.isEmpty && operations > 0 }
    }

    /// One operation: `body` runs in a job (one call into OpenSSL), `check` judges its result afterwards.
    struct Operation {
        let algorithm: String
        let body: () -> Int32
        let check: (Int32) -> Bool
    }

    final class Box: @unchecked Sendable {
        var bytes: [UInt8] = []
        var signature: OpaquePointer?
    }

    /// With `provider`, the operations go through the provider (the same .so
    /// as `engine`, so the same pool, the same counters and the same ctrls to
    /// reshape it with); else through the engine.
    public static func run(engine: LoadedEngine, provider: LoadedProvider? = nil, operations target: Int,
                           seed: UInt64, progress: (String) -> Void = { _ in }) throws -> Report {
        var random = SplitMix64(seed: seed)
        let fixtures: SoakFixtures = try provider.map { try ProviderFixtures(provider: $0) }
            ?? Fixtures(engine: engine)
        let started = Date()
        let before = try engine.stats()
        var report = Report()

        let sideThread = SideThread(fixtures: fixtures, seed: seed &+ 1)
        sideThread.start()
        var nextProgress = 100_000
        while report.operations < target {
            if random.below(40) == 0 {
                try engine.set("THREADS", String(1 + random.below(4)))
                try engine.set("QUEUE_DEPTH", String([1, 2, 4, 16, 64, 1024][random.below(6)]))
                try engine.set("SYNC_OFFLOAD", random.below(2) == 0 ? "0" : "1")
                try engine.set("MULTIBUFFER", random.below(4) == 0 ? "0" : "1")
                try engine.set("MULTIBUFFER_MIN_FILL", String(random.below(LaneCheck.width + 1)))
                report.reshapes += 1
            }
            let operations = (0...random.below(64)).map { _ in fixtures.make(&random) }
            let mode: WakeMode = random.below(2) == 0 ? .waitFD : .callback
            let spurious = random.below(8) == 0
            let outcome = try AsyncBatch.run(operations.map(\.body), mode: mode, spurious: spurious, timeout: 60)
            for (operation, result) in zip(operations, outcome.results) {
                report.issued[operation.algorithm, default: 0] += 1
                if !operation.check(result), report.mismatches.count < 20 {
                    report.mismatches.append("\(operation.algorithm) in a \(mode.rawValue) job returned \(result), unlike default OpenSSL")
                }
            }
            report.operations += operations.count
            report.rounds += 1
            report.spuriousRounds += spurious ? 1 : 0
            if report.operations >= nextProgress {
                progress("\(report.operations) operations in \(report.rounds) rounds, \(Int(Date().timeIntervalSince(started))) s")
                nextProgress += 100_000
            }
        }
        let side = sideThread.stop()
        report.operations += side.issued.values.reduce(0, +)
        report.issued.merge(side.issued, uniquingKeysWith: +)
        report.mismatches += side.mismatches
        let settled = engine.waitUntilNothingInFlight()
        let after = try engine.stats()
        report.seconds = Date().timeIntervalSince(started)
        account(&report, before: before, after: after, settled: settled)
        return report
    }

    static func account(_ report: inout Report, before: EngineStats, after: EngineStats, settled: Bool) {
        if !settled { report.accountingErrors.append("operations still in flight 30 s after the last round") }
        let lanes = ["rsa_private_encrypt", "x25519_derive"].map { after.count($0, "lanes") - before.count($0, "lanes") }
        if LaneCheck.lanesExist(after), lanes.contains(0), report.operations >= 10_000 {
            report.accountingErrors.append("the 8-lane path never ran (RSA, X25519 in lanes: \(lanes))")
        }
        for (algorithm, issued) in report.issued.sorted(by: { $0.key < $1.key }) {
            var counted: [String: Int] = [:]
            for counter in ["offloaded", "completed", "inline", "retried", "failed", "lanes", "lane_calls"] {
                counted[counter] = after.count(algorithm, counter) - before.count(algorithm, counter)
            }
            report.counted[algorithm] = counted
            if counted["offloaded"]! + counted["inline"]! != issued {
                report.accountingErrors.append("\(algorithm): issued \(issued), the engine ran \(counted["offloaded"]!) offloaded + \(counted["inline"]!) inline")
            }
            if counted["completed"]! != counted["offloaded"]! {
                report.accountingErrors.append("\(algorithm): \(counted["offloaded"]!) offloaded, \(counted["completed"]!) handed back")
            }
        }
    }

    /// The second application thread: operations outside any job.
    final class SideThread: @unchecked Sendable {
        let fixtures: SoakFixtures
        let seed: UInt64
        let state = Locked((stop: false, done: false, issued: [String: Int](), mismatches: [String]()))

        init(fixtures: SoakFixtures, seed: UInt64) {
            self.fixtures = fixtures
            self.seed = seed
        }

        func start() {
            Thread { [self] in
                var random = SplitMix64(seed: seed)
                while !state.withLock({ $0.stop }) {
                    let operation = fixtures.make(&random)
                    let ok = operation.check(operation.body())
                    state.withLock { state in
                        state.issued[operation.algorithm, default: 0] += 1
                        if !ok, state.mismatches.count < 20 {
                            state.mismatches.append("\(operation.algorithm) outside a job, unlike default OpenSSL")
                        }
                    }
                    usleep(200)   // a side thread: the event loop stays the main source of work
                }
                state.withLock { $0.done = true }
            }.start()
        }

        func stop() -> (issued: [String: Int], mismatches: [String]) {
            state.withLock { $0.stop = true }
            while !state.withLock({ $0.done }) { usleep(1_000) }
            return state.withLock { ($0.issued, $0.mismatches) }
        }
    }

    /// Keys, inputs and default OpenSSL's answers, made once.
    final class Fixtures: SoakFixtures, @unchecked Sendable {
        static let tableSize = 64
        let rsa1024: RSAKeyPair
        let rsa2048: RSAKeyPair
        let signs1024: [(RSAPrivateOperation, [UInt8])]
        let signs2048: [(RSAPrivateOperation, [UInt8])]
        let decrypts2048: [(RSAPrivateOperation, [UInt8])]
        let ecdh: [(own: ECKeyPair, peer: OpaquePointer, secret: [UInt8])]
        let ecdsaKey: ECKeyPair
        let digests: [[UInt8]]
        let x25519: [(own: OpaquePointer, peer: OpaquePointer, secret: [UInt8])]
        static let p256 = ECCurves.Curve(nid: NID_X9_62_prime256v1)

        init(engine: LoadedEngine) throws {
            rsa1024 = try RSAKeyPair(bits: 1024)
            rsa2048 = try RSAKeyPair(bits: 2048)
            func table(_ kind: RSAPrivateOperation.Kind, _ padding: Int32, _ key: RSAKeyPair) -> [(RSAPrivateOperation, [UInt8])] {
                (0..<Self.tableSize).map { _ in
                    let operation = RSAPrivateOperation.random(kind, padding: padding, key: key)
                    return (operation, operation.perform(on: key.softwareKey).output)
                }
            }
            signs1024 = table(.encrypt, RSA_PKCS1_PADDING, rsa1024)
            signs2048 = table(.encrypt, RSA_PKCS1_PADDING, rsa2048)
            decrypts2048 = table(.decrypt, RSA_PKCS1_OAEP_PADDING, rsa2048)
            ecdh = try (0..<Self.tableSize).map { _ in
                let own = try ECKeyPair(curve: Self.p256, mode: .sync)
                let other = try ECKeyPair(curve: Self.p256, mode: .sync)
                let peer = EC_POINT_dup(other.publicKey, other.group)!
                return (own, peer, ECKeyPair.derive(own.softwareKey, peer: peer).1)
            }
            ecdsaKey = try ECKeyPair(curve: Self.p256, mode: .sync)
            digests = (0..<Self.tableSize).map { _ in randomBytes(32) }
            let vector = ECXVector.x25519
            x25519 = try (0..<Self.tableSize).map { _ in
                guard let own = vector.generate(), let other = vector.generate(),
                      let peer = vector.publicKey(ECXVector.rawPublic(other)) else { throw HarnessError("X25519 keys") }
                EVP_PKEY_free(other)
                return (own, peer, engine.withSoftwareDefaults { ECXVector.derive(own, peer).1 })
            }
        }

        deinit {
            ecdh.forEach { EC_POINT_free($0.peer) }
            x25519.forEach { EVP_PKEY_free($0.own); EVP_PKEY_free($0.peer) }
        }

        /// A random operation, weighted towards the cheap ones as a TLS server's mix is.
        func make(_ random: inout SplitMix64) -> Operation {
            let pick = random.below(Self.tableSize)
            let box = Box()
            switch random.below(100) {
            case 0..<35:
                let (own, peer, secret) = x25519[pick]
                return Operation(algorithm: "x25519_derive", body: {
                    let (result, bytes) = ECXVector.derive(own, peer); box.bytes = bytes; return result
                }, check: { $0 > 0 && box.bytes == secret })
            case 35..<60:
                let (own, peer, secret) = ecdh[pick]
                let key = own.engineKey
                return Operation(algorithm: "ecdh_derive", body: {
                    let (result, bytes) = ECKeyPair.derive(key, peer: peer); box.bytes = bytes; return result
                }, check: { $0 > 0 && box.bytes == secret })
            case 60..<75:
                let digest = digests[pick], key = ecdsaKey.engineKey, verifier = ecdsaKey.softwareKey
                return Operation(algorithm: "ecdsa_sign", body: {
                    box.signature = ECDSA_do_sign(digest, Int32(digest.count), key)
                    return box.signature == nil ? 0 : 1
                }, check: { _ in
                    defer { ECDSA_SIG_free(box.signature) }
                    return box.signature != nil && ECDSA_do_verify(digest, Int32(digest.count), box.signature, verifier) == 1
                })
            case 75..<88: return rsa(signs1024[pick], rsa1024, "rsa_private_encrypt")
            case 88..<93: return rsa(signs2048[pick], rsa2048, "rsa_private_encrypt")
            case 93..<97: return rsa(decrypts2048[pick], rsa2048, "rsa_private_decrypt")
            default:
                let key = EC_KEY_new_by_curve_name(Self.p256.nid)!
                return Operation(algorithm: "ec_keygen", body: { EC_KEY_generate_key(key) }, check: { result in
                    defer { EC_KEY_free(key) }
                    return result == 1 && EC_KEY_check_key(key) == 1
                })
            }
        }

        func rsa(_ entry: (RSAPrivateOperation, [UInt8]), _ key: RSAKeyPair, _ algorithm: String) -> Operation {
            let (operation, expected) = entry
            let box = OutputBox()
            return Operation(algorithm: algorithm, body: operation.jobBody(on: key.engineKey, into: box),
                             check: { $0 > 0 && box.output == expected })
        }
    }
}

/// Where a soak's operations come from.
protocol SoakFixtures: AnyObject, Sendable {
    /// A random operation, weighted towards the cheap ones as a TLS server's mix is.
    func make(_ random: inout SplitMix64) -> Soak.Operation
}

/// The provider's mix, all through EVP in the provider's library context,
/// each operation on a context of its own (as a TLS server makes them):
/// X25519 and P-256 ECDH (byte-equal), P-256 ECDSA and RSA-2048 PSS
/// digest-sign (verified by the default provider), RSA-2048 PKCS#1 v1.5
/// (byte-equal), RSA-2048 OAEP decryption (byte-equal), P-256 key generation.
final class ProviderFixtures: SoakFixtures, @unchecked Sendable {
    static let tableSize = 64
    let provider: LoadedProvider
    let rsa: OpaquePointer, rsaPlain: OpaquePointer
    let ecdsa: OpaquePointer, ecdsaPlain: OpaquePointer
    let exchanges: [(type: String, own: OpaquePointer, peer: OpaquePointer, secret: [UInt8])]
    let digests: [[UInt8]]
    let signatures: [[UInt8]]           /* RSA PKCS#1 v1.5 of digests[i], by the default provider */
    let ciphertexts: [([UInt8], [UInt8])]

    init(provider: LoadedProvider) throws {
        self.provider = provider
        func generate(_ type: String, in context: OpaquePointer, group: String? = nil) throws -> OpaquePointer {
            guard let key = LoadedProvider.generate(type, in: context, group: group) else { throw HarnessError("\(type) key") }
            return key
        }
        let rsa = try generate("RSA", in: provider.context)
        let rsaPlain = try required(LoadedProvider.copy(rsa, to: provider.plain))
        self.rsa = rsa
        self.rsaPlain = rsaPlain
        ecdsa = try generate("EC", in: provider.context, group: "P-256")
        ecdsaPlain = try required(LoadedProvider.copy(ecdsa, to: provider.plain))
        exchanges = try (0..<Self.tableSize).map { index in
            let (type, group): (String, String?) = index % 2 == 0 ? ("X25519", nil) : ("EC", "P-256")
            let own = try generate(type, in: provider.context, group: group)
            let other = try generate(type, in: provider.plain, group: group)
            let peer = try required(LoadedProvider.copyPublic(other, to: provider.context))
            let ownPlain = try required(LoadedProvider.copy(own, to: provider.plain))
            defer { EVP_PKEY_free(other); EVP_PKEY_free(ownPlain) }
            let secret = Self.derive(in: provider.plain, ownPlain, try required(LoadedProvider.copyPublic(peer, to: provider.plain)), freePeer: true).1
            return (type == "EC" ? "ecdh_derive" : "x25519_derive", own, peer, secret)
        }
        let digests = (0..<Self.tableSize).map { _ in randomBytes(32) }
        self.digests = digests
        signatures = digests.map { Self.sign(rsaPlain, in: provider.plain, $0).1 }
        ciphertexts = (0..<Self.tableSize).map { _ in
            let message = randomBytes(48)
            let encrypter = EVP_PKEY_CTX_new_from_pkey(provider.plain, rsaPlain, nil)!
            defer { EVP_PKEY_CTX_free(encrypter) }
            var out = [UInt8](repeating: 0, count: 256)
            var length = out.count
            EVP_PKEY_encrypt_init(encrypter)
            EVP_PKEY_CTX_set_rsa_padding(encrypter, RSA_PKCS1_OAEP_PADDING)
            EVP_PKEY_encrypt(encrypter, &out, &length, message, message.count)
            return (Array(out.prefix(length)), message)
        }
    }

    deinit {
        [rsa, rsaPlain, ecdsa, ecdsaPlain].forEach { EVP_PKEY_free($0) }
        exchanges.forEach { EVP_PKEY_free($0.own); EVP_PKEY_free($0.peer) }
    }

    static func derive(in context: OpaquePointer, _ own: OpaquePointer, _ peer: OpaquePointer, freePeer: Bool = false) -> (Int32, [UInt8]) {
        defer { if freePeer { EVP_PKEY_free(peer) } }
        guard let deriver = EVP_PKEY_CTX_new_from_pkey(context, own, nil) else { return (0, []) }
        defer { EVP_PKEY_CTX_free(deriver) }
        var secret = [UInt8](repeating: 0, count: 66)
        var length = secret.count
        guard EVP_PKEY_derive_init(deriver) == 1, EVP_PKEY_derive_set_peer(deriver, peer) == 1 else { return (0, []) }
        let result = EVP_PKEY_derive(deriver, &secret, &length)
        return (result, Array(secret.prefix(result == 1 ? length : 0)))
    }

    /// EVP_PKEY_sign with SHA-256 and `padding` (RSA) on a new context.
    static func sign(_ key: OpaquePointer, in context: OpaquePointer, _ digest: [UInt8], padding: Int32? = nil) -> (Int32, [UInt8]) {
        guard let signer = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return (0, []) }
        defer { EVP_PKEY_CTX_free(signer) }
        var signature = [UInt8](repeating: 0, count: 512)
        var length = signature.count
        guard EVP_PKEY_sign_init(signer) == 1, EVP_PKEY_CTX_set_signature_md(signer, EVP_sha256()) == 1 else { return (0, []) }
        if let padding { EVP_PKEY_CTX_set_rsa_padding(signer, padding) }
        let result = EVP_PKEY_sign(signer, &signature, &length, digest, digest.count)
        return (result, Array(signature.prefix(result == 1 ? length : 0)))
    }

    static func verifies(_ key: OpaquePointer, in context: OpaquePointer, _ signature: [UInt8], _ message: [UInt8], digestSign: Bool) -> Bool {
        let verifier = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(verifier) }
        var pkeyContext: OpaquePointer?
        if digestSign {
            guard EVP_DigestVerifyInit_ex(verifier, &pkeyContext, "SHA256", context, nil, key, nil) == 1 else { return false }
            EVP_PKEY_CTX_set_rsa_padding(pkeyContext, RSA_PKCS1_PSS_PADDING)
            return EVP_DigestVerify(verifier, signature, signature.count, message, message.count) == 1
        }
        guard let plain = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return false }
        defer { EVP_PKEY_CTX_free(plain) }
        return EVP_PKEY_verify_init(plain) == 1 && EVP_PKEY_CTX_set_signature_md(plain, EVP_sha256()) == 1
            && EVP_PKEY_verify(plain, signature, signature.count, message, message.count) == 1
    }

    func make(_ random: inout SplitMix64) -> Soak.Operation {
        let pick = random.below(Self.tableSize)
        let box = Soak.Box()
        let context = provider.context, plain = provider.plain
        switch random.below(100) {
        case 0..<60:
            let (algorithm, own, peer, secret) = exchanges[pick]
            return Soak.Operation(algorithm: algorithm, body: {
                let (result, bytes) = Self.derive(in: context, own, peer); box.bytes = bytes; return result
            }, check: { $0 > 0 && box.bytes == secret })
        case 60..<75:
            let digest = digests[pick], key = ecdsa, verifier = ecdsaPlain
            return Soak.Operation(algorithm: "ecdsa_sign", body: {
                let (result, bytes) = Self.sign(key, in: context, digest); box.bytes = bytes; return result
            }, check: { $0 > 0 && Self.verifies(verifier, in: plain, box.bytes, digest, digestSign: false) })
        case 75..<85:
            let digest = digests[pick], expected = signatures[pick], key = rsa
            return Soak.Operation(algorithm: "rsa_private_encrypt", body: {
                let (result, bytes) = Self.sign(key, in: context, digest, padding: RSA_PKCS1_PADDING); box.bytes = bytes; return result
            }, check: { $0 > 0 && box.bytes == expected })
        case 85..<93:
            let message = digests[pick], key = rsa, verifier = rsaPlain
            return Soak.Operation(algorithm: "rsa_private_encrypt", body: {
                let signer = EVP_MD_CTX_new()!
                defer { EVP_MD_CTX_free(signer) }
                var pkeyContext: OpaquePointer?
                var signature = [UInt8](repeating: 0, count: 256)
                var length = signature.count
                guard EVP_DigestSignInit_ex(signer, &pkeyContext, "SHA256", context, nil, key, nil) == 1 else { return 0 }
                EVP_PKEY_CTX_set_rsa_padding(pkeyContext, RSA_PKCS1_PSS_PADDING)
                let result = EVP_DigestSign(signer, &signature, &length, message, message.count)
                box.bytes = Array(signature.prefix(result == 1 ? length : 0)); return result
            }, check: { $0 > 0 && Self.verifies(verifier, in: plain, box.bytes, message, digestSign: true) })
        case 93..<97:
            let (ciphertext, message) = ciphertexts[pick], key = rsa
            return Soak.Operation(algorithm: "rsa_private_decrypt", body: {
                guard let decrypter = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return 0 }
                defer { EVP_PKEY_CTX_free(decrypter) }
                var out = [UInt8](repeating: 0, count: 256)
                var length = out.count
                guard EVP_PKEY_decrypt_init(decrypter) == 1,
                      EVP_PKEY_CTX_set_rsa_padding(decrypter, RSA_PKCS1_OAEP_PADDING) == 1 else { return 0 }
                let result = EVP_PKEY_decrypt(decrypter, &out, &length, ciphertext, ciphertext.count)
                box.bytes = Array(out.prefix(result == 1 ? length : 0)); return result
            }, check: { $0 > 0 && box.bytes == message })
        default:
            return Soak.Operation(algorithm: "ec_keygen", body: {
                box.signature = LoadedProvider.generate("EC", in: context, group: "P-256"); return box.signature == nil ? 0 : 1
            }, check: { result in
                defer { EVP_PKEY_free(box.signature) }
                guard result == 1, let key = box.signature, let checker = EVP_PKEY_CTX_new_from_pkey(plain, key, nil) else { return false }
                defer { EVP_PKEY_CTX_free(checker) }
                return EVP_PKEY_check(checker) == 1
            })
        }
    }
}

func required<T>(_ value: T?, _ what: String = "a key") throws -> T {
    guard let value else { throw HarnessError(what) }
    return value
}

/// A small seeded generator, so that a soak can be replayed with --seed.
public struct SplitMix64 {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
