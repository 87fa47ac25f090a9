import COpenSSL
import EngineHarness
import XCTest

/// swiftasync as a provider (OpenSSL 3.0 here): keys are the default
/// provider's, the private-key steps run on the pool inside async jobs. Each
/// result is compared with the default provider's alone (byte-equal where
/// deterministic, verified where not), and the provider's own counters show
/// where each step ran.
final class ProviderTests: ProviderTestCase {
    /// Runs each body in its own async job; returns the results and the counters' change.
    func inJobs(_ bodies: [() -> Int32], mode: WakeMode) throws -> (results: [Int32], before: EngineStats, after: EngineStats) {
        let before = try loaded.stats()
        let results = try AsyncBatch.run(bodies, mode: mode).results
        return (results, before, try loaded.stats())
    }

    func delta(_ run: (results: [Int32], before: EngineStats, after: EngineStats), _ algorithm: String, _ counter: String = "offloaded") -> Int {
        run.after.count(algorithm, counter) - run.before.count(algorithm, counter)
    }

    /// A signing context on `key` with `padding` (RSA) and SHA-256, made outside any job.
    static func signer(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32? = nil) -> OpaquePointer {
        let signer = EVP_PKEY_CTX_new_from_pkey(context, key, nil)!
        XCTAssertEqual(EVP_PKEY_sign_init(signer), 1)
        if let padding { XCTAssertEqual(EVP_PKEY_CTX_set_rsa_padding(signer, padding), 1) }
        XCTAssertEqual(EVP_PKEY_CTX_set_signature_md(signer, EVP_sha256()), 1)
        return signer
    }

    static func sign(_ signer: OpaquePointer, _ digest: [UInt8]) -> (Int32, [UInt8]) {
        var signature = [UInt8](repeating: 0, count: 1024)
        var length = signature.count
        let result = EVP_PKEY_sign(signer, &signature, &length, digest, digest.count)
        return (result, Array(signature.prefix(result == 1 ? length : 0)))
    }

    static func verify(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32?, _ signature: [UInt8], _ digest: [UInt8]) -> Bool {
        guard let verifier = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return false }
        defer { EVP_PKEY_CTX_free(verifier) }
        guard EVP_PKEY_verify_init(verifier) == 1 else { return false }
        if let padding { EVP_PKEY_CTX_set_rsa_padding(verifier, padding) }
        EVP_PKEY_CTX_set_signature_md(verifier, EVP_sha256())
        return EVP_PKEY_verify(verifier, signature, signature.count, digest, digest.count) == 1
    }

    func testLoadsByPathAndNamesItself() throws {
        XCTAssertEqual(loaded.name, "swiftasync")
        XCTAssertTrue(try loaded.stats().text.hasPrefix("swiftasync pid="))
    }

    /// RSA PKCS#1 v1.5 byte-equal, PSS verified, in both wake modes.
    func testRSASignaturesOffloaded() throws {
        let key = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
        defer { EVP_PKEY_free(key); EVP_PKEY_free(plainKey) }
        for mode in WakeMode.allCases {
            for padding in [RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING] {
                let digests = (0..<8).map { _ in randomBytes(32) }
                let signers = digests.map { _ in Self.signer(key, in: loaded.context, padding: padding) }
                defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
                let boxes = digests.map { _ in OutputBox() }
                let run = try inJobs(zip(zip(signers, digests), boxes).map { pair, box in
                    { let (result, signature) = Self.sign(pair.0, pair.1); box.output = signature; return result }
                }, mode: mode)
                XCTAssertEqual(run.results, Array(repeating: 1, count: 8), "\(mode) padding \(padding)")
                XCTAssertEqual(delta(run, "rsa_private_encrypt"), 8, "\(mode): every signature offloaded")
                for (digest, box) in zip(digests, boxes) {
                    if padding == RSA_PKCS1_PADDING {
                        let plainSigner = Self.signer(plainKey, in: loaded.plain, padding: padding)
                        XCTAssertEqual(box.output, Self.sign(plainSigner, digest).1, "byte-equal with the default provider")
                        EVP_PKEY_CTX_free(plainSigner)
                    }
                    XCTAssertTrue(Self.verify(plainKey, in: loaded.plain, padding: padding, box.output, digest))
                }
            }
        }
    }

    /// ECDSA on P-256, P-384 and P-521: verified by the default provider.
    func testECDSAOffloaded() throws {
        for group in ["P-256", "P-384", "P-521"] {
            let key = try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: group))
            let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
            defer { EVP_PKEY_free(key); EVP_PKEY_free(plainKey) }
            let digests = (0..<8).map { _ in randomBytes(32) }
            let signers = digests.map { _ in Self.signer(key, in: loaded.context) }
            defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
            let boxes = digests.map { _ in OutputBox() }
            let run = try inJobs(zip(zip(signers, digests), boxes).map { pair, box in
                { let (result, signature) = Self.sign(pair.0, pair.1); box.output = signature; return result }
            }, mode: .callback)
            XCTAssertEqual(run.results, Array(repeating: 1, count: 8), group)
            XCTAssertEqual(delta(run, "ecdsa_sign"), 8, group)
            for (digest, box) in zip(digests, boxes) {
                XCTAssertTrue(Self.verify(plainKey, in: loaded.plain, padding: nil, box.output, digest), group)
            }
        }
    }

    /// Key generation and key exchange, both in jobs: the secret is byte-equal
    /// with the default provider's for the same keys.
    func testKeyGenerationAndExchangeOffloaded() throws {
        let cases: [(type: String, group: String?, keygen: String, derive: String)] = [
            ("EC", "P-256", "ec_keygen", "ecdh_derive"), ("EC", "P-384", "ec_keygen", "ecdh_derive"),
            ("EC", "P-521", "ec_keygen", "ecdh_derive"), ("X25519", nil, "x25519_keygen", "x25519_derive"),
            ("X448", nil, "x448_keygen", "x448_derive"),
        ]
        for (type, group, keygen, derive) in cases {
            let label = group ?? type
            let generators = keyGenerators(type, group: group, count: 4, in: loaded.context)
            defer { generators.forEach { EVP_PKEY_CTX_free($0) } }
            let keys = generators.map { _ in GeneratedKey() }
            let generated = try inJobs(zip(generators, keys).map { generator, box in
                { EVP_PKEY_generate(generator, &box.key) }
            }, mode: .waitFD)
            XCTAssertEqual(generated.results, [1, 1, 1, 1], label)
            XCTAssertEqual(delta(generated, keygen), 4, "\(label): key generation offloaded")

            let peers = keys.map { _ in LoadedProvider.generate(type, in: loaded.plain, group: group)! }
            defer { peers.forEach { EVP_PKEY_free($0) } }
            let deriverBoxes = try zip(keys, peers).map { own, peer -> (OpaquePointer, OpaquePointer) in
                let deriver = EVP_PKEY_CTX_new_from_pkey(loaded.context, try XCTUnwrap(own.key), nil)!
                let peerHere = try XCTUnwrap(LoadedProvider.copyPublic(peer, to: loaded.context))
                XCTAssertEqual(EVP_PKEY_derive_init(deriver), 1)
                XCTAssertEqual(EVP_PKEY_derive_set_peer(deriver, peerHere), 1)
                return (deriver, peerHere)
            }
            defer { deriverBoxes.forEach { EVP_PKEY_CTX_free($0.0); EVP_PKEY_free($0.1) } }
            let secrets = keys.map { _ in OutputBox() }
            let derived = try inJobs(zip(deriverBoxes, secrets).map { pair, box in
                { var secret = [UInt8](repeating: 0, count: 132); var length = secret.count
                  let result = EVP_PKEY_derive(pair.0, &secret, &length)
                  box.output = Array(secret.prefix(result == 1 ? length : 0)); return result }
            }, mode: .callback)
            XCTAssertEqual(derived.results, [1, 1, 1, 1], label)
            XCTAssertEqual(delta(derived, derive), 4, "\(label): derive offloaded")
            for ((own, peer), box) in zip(zip(keys, peers), secrets) {
                let plainOwn = try XCTUnwrap(LoadedProvider.copy(try XCTUnwrap(own.key), to: loaded.plain))
                defer { EVP_PKEY_free(plainOwn) }
                let deriver = EVP_PKEY_CTX_new_from_pkey(loaded.plain, plainOwn, nil)!
                defer { EVP_PKEY_CTX_free(deriver) }
                var secret = [UInt8](repeating: 0, count: 132)
                var length = secret.count
                XCTAssertEqual(EVP_PKEY_derive_init(deriver), 1)
                XCTAssertEqual(EVP_PKEY_derive_set_peer(deriver, peer), 1)
                XCTAssertEqual(EVP_PKEY_derive(deriver, &secret, &length), 1)
                XCTAssertEqual(box.output, Array(secret.prefix(length)), "\(label): secret byte-equal")
            }
        }
    }

    /// OAEP decryption byte-equal; a corrupted ciphertext fails with the default provider's errors.
    func testRSADecryptionAndItsErrors() throws {
        let key = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
        defer { EVP_PKEY_free(key); EVP_PKEY_free(plainKey) }
        func cipher(_ message: [UInt8]) -> [UInt8] {
            let encrypter = EVP_PKEY_CTX_new_from_pkey(loaded.plain, plainKey, nil)!
            defer { EVP_PKEY_CTX_free(encrypter) }
            EVP_PKEY_encrypt_init(encrypter)
            EVP_PKEY_CTX_set_rsa_padding(encrypter, RSA_PKCS1_OAEP_PADDING)
            var out = [UInt8](repeating: 0, count: 256)
            var length = out.count
            XCTAssertEqual(EVP_PKEY_encrypt(encrypter, &out, &length, message, message.count), 1)
            return Array(out.prefix(length))
        }
        func decrypter(_ key: OpaquePointer, in context: OpaquePointer) -> OpaquePointer {
            let decrypter = EVP_PKEY_CTX_new_from_pkey(context, key, nil)!
            EVP_PKEY_decrypt_init(decrypter)
            EVP_PKEY_CTX_set_rsa_padding(decrypter, RSA_PKCS1_OAEP_PADDING)
            return decrypter
        }
        final class Outcome: @unchecked Sendable { var plain: [UInt8] = []; var errors: [String] = [] }
        func decrypt(_ decrypter: OpaquePointer, _ input: [UInt8], _ outcome: Outcome) -> Int32 {
            ERR_clear_error()
            var out = [UInt8](repeating: 0, count: 256)
            var length = out.count
            let result = EVP_PKEY_decrypt(decrypter, &out, &length, input, input.count)
            outcome.plain = Array(out.prefix(result == 1 ? length : 0))
            outcome.errors = OpenSSLErrors.codes().map { "\($0.library)/\($0.reason)" }
            return result
        }
        let messages = (0..<4).map { _ in randomBytes(32) }
        var inputs = messages.map(cipher)
        var corrupt = randomBytes(256)
        corrupt[0] = 0
        inputs.append(corrupt)
        let decrypters = inputs.map { _ in decrypter(key, in: loaded.context) }
        defer { decrypters.forEach { EVP_PKEY_CTX_free($0) } }
        let outcomes = inputs.map { _ in Outcome() }
        let run = try inJobs(zip(zip(decrypters, inputs), outcomes).map { pair, outcome in
            { decrypt(pair.0, pair.1, outcome) }
        }, mode: .waitFD)
        XCTAssertEqual(delta(run, "rsa_private_decrypt"), 5)
        XCTAssertEqual(delta(run, "rsa_private_decrypt", "failed"), 1)
        for (index, message) in messages.enumerated() {
            XCTAssertEqual(run.results[index], 1)
            XCTAssertEqual(outcomes[index].plain, message)
        }
        let plainDecrypter = decrypter(plainKey, in: loaded.plain)
        defer { EVP_PKEY_CTX_free(plainDecrypter) }
        let expected = Outcome()
        let expectedResult = decrypt(plainDecrypter, corrupt, expected)
        XCTAssertLessThanOrEqual(expectedResult, 0)
        XCTAssertEqual(run.results[4], expectedResult)
        XCTAssertFalse(expected.errors.isEmpty)
        XCTAssertEqual(outcomes[4].errors, expected.errors, "the default provider's errors, on the caller's queue")
    }

    /// The provider's library context freed while the engine keeps the pool
    /// busy: the workers that used it must let go of it first (they would
    /// crash on leaving later), and the engine goes on working.
    func testProviderUnloadedWhileTheEngineStaysLoaded() throws {
        let engine = try LoadedEngine()
        defer { engine.close() }
        let key = try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: "P-256"))
        let signers = (0..<8).map { _ in Self.signer(key, in: loaded.context) }
        let run = try inJobs(signers.map { signer in { Self.sign(signer, randomBytes(32)).0 } }, mode: .waitFD)
        XCTAssertEqual(run.results, Array(repeating: 1, count: 8))
        signers.forEach { EVP_PKEY_CTX_free($0) }
        EVP_PKEY_free(key)
        loaded.close()
        let rsa = try RSAKeyPair(bits: 2048)
        XCTAssertEqual(SelfCheck.freshSignaturesAgreeing(rsa, count: 8), 8, "the engine signs on a new pool")
    }

    /// The engine and the provider in one process: the target's EC and RSA
    /// code then runs on keys with the engine's methods. A worker computing
    /// a provider step must do the engine's part itself, uncounted: with one
    /// worker and SYNC_OFFLOAD it once waited for itself (the provider soak
    /// hung). Every step counted once.
    func testEngineAndProviderTogetherNeverWaitOnThemselves() throws {
        let engine = try LoadedEngine()
        defer { engine.close() }
        try engine.set("THREADS", "1")
        try engine.set("SYNC_OFFLOAD", "1")
        try engine.set("CALLER_RUNS_DEPTH", "0")   // the 8 jobs all reach the one worker
        defer { try? engine.set("SYNC_OFFLOAD", "0"); try? engine.set("THREADS", "0") }
        let rsa = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        defer { EVP_PKEY_free(rsa) }
        let before = try loaded.stats()
        let generators = keyGenerators("EC", group: "P-256", count: 4, in: loaded.context)
        defer { generators.forEach { EVP_PKEY_CTX_free($0) } }
        let keys = generators.map { _ in GeneratedKey() }
        let signers = (0..<4).map { _ in Self.signer(rsa, in: loaded.context) }
        defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
        let bodies: [() -> Int32] = zip(generators, keys).map { generator, box in { EVP_PKEY_generate(generator, &box.key) } }
            + signers.map { signer in { Self.sign(signer, randomBytes(32)).0 } }
        XCTAssertEqual(try AsyncBatch.run(bodies, mode: .waitFD, timeout: 20).results, Array(repeating: 1, count: 8))
        // Outside jobs, SYNC_OFFLOAD: the application thread waits for the one worker.
        XCTAssertEqual(Self.sign(signers[0], randomBytes(32)).0, 1)
        let after = try loaded.stats()
        for (algorithm, count) in [("ec_keygen", 4), ("rsa_private_encrypt", 5)] {
            let counted = ["offloaded", "inline"].map { after.count(algorithm, $0) - before.count(algorithm, $0) }
            XCTAssertEqual(counted, [count, 0], "\(algorithm): each step counted once, offloaded")
        }
    }

    /// Outside a job nothing is offloaded, and a size query never is.
    func testOutsideJobsAndSizeQueriesStayInline() throws {
        let key = try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: "P-256"))
        defer { EVP_PKEY_free(key) }
        let signer = Self.signer(key, in: loaded.context)
        defer { EVP_PKEY_CTX_free(signer) }
        let before = try loaded.stats()
        var length = 0
        XCTAssertEqual(EVP_PKEY_sign(signer, nil, &length, randomBytes(32), 32), 1)
        XCTAssertGreaterThan(length, 0)
        XCTAssertEqual(Self.sign(signer, randomBytes(32)).0, 1)
        let after = try loaded.stats()
        XCTAssertEqual(after.count("ecdsa_sign", "offloaded") - before.count("ecdsa_sign", "offloaded"), 0)
        XCTAssertEqual(after.count("ecdsa_sign", "inline") - before.count("ecdsa_sign", "inline"), 1,
                       "the signature inline, the size query not counted")
    }
}

/// `count` key-generation contexts of `type` (and `group`) in `context`, initialised outside any job.
func keyGenerators(_ type: String, group: String?, count: Int, in context: OpaquePointer) -> [OpaquePointer] {
    (0..<count).map { _ in
        let generator = EVP_PKEY_CTX_new_from_name(context, type, nil)!
        XCTAssertEqual(EVP_PKEY_keygen_init(generator), 1)
        if let group { XCTAssertEqual(EVP_PKEY_CTX_set_group_name(generator, group), 1) }
        return generator
    }
}

/// An EVP_PKEY a job fills in; freed with the box.
final class GeneratedKey: @unchecked Sendable {
    var key: OpaquePointer?
    deinit { EVP_PKEY_free(key) }
}
