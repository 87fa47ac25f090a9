import COpenSSL
import EngineHarness
import XCTest

/// Keys in a PKCS#11 token (SoftHSM) through swiftasync forwarding to
/// pkcs11-provider, beside swiftasync forwarding to default (the shape of
/// openssl-pkcs11.cnf). Every result is compared with pkcs11-provider
/// alone's and default OpenSSL's on the same key (byte-equal where
/// deterministic, verified where not), in plain calls and in async jobs in
/// both wake modes; the counters show each step that reaches the token ran
/// on the pool.
final class KeyStoreTests: XCTestCase {
    /// The keys, made once by default OpenSSL and written into the process's one token.
    final class Fixture: @unchecked Sendable {
        let token: SoftHSMToken
        let plain: OpaquePointer
        let keys: [String: OpaquePointer]    // label -> default's copy of the token's key

        init() throws {
            token = try SoftHSMToken.shared()
            guard let plain = OSSL_LIB_CTX_new(), OSSL_PROVIDER_load(plain, "default") != nil else {
                throw HarnessError("a plain library context")
            }
            self.plain = plain
            var keys: [String: OpaquePointer] = [:]
            for (label, type, group, usages) in [("rsa", "RSA", nil, ["sign", "decrypt"]),
                                                 ("p256", "EC", "P-256", ["sign", "derive"]),
                                                 ("p384", "EC", "P-384", ["sign", "derive"])] {
                guard let key = LoadedProvider.generate(type, in: plain, group: group) else {
                    throw HarnessError("a \(label) key")
                }
                try token.importKey(key, label: label, id: String(format: "%02x", keys.count + 1), usages: usages)
                keys[label] = key
            }
            self.keys = keys
        }
    }

    static let made = Result { try Fixture() }

    var fixture: Fixture!
    var alone: OpaquePointer!
    var through: OpaquePointer!
    var instance: OpaquePointer!
    private var files: [String] = []

    override func setUpWithError() throws {
        ERR_clear_error()
        do { fixture = try Self.made.get() } catch { throw XCTSkip("no token here: \(error)") }
        let base = NSTemporaryDirectory() + "swiftasync-keystore-\(getpid())-\(UUID().uuidString)"
        files = [base + "-alone.cnf", base + "-through.cnf"]
        alone = try SoftHSMToken.context(fixture.token.aloneConfiguration(), file: files[0])
        through = try SoftHSMToken.context(
            fixture.token.throughConfiguration(swiftasync: LoadedEngine.defaultPath(), file: files[1]), file: files[1])
        instance = try XCTUnwrap(OSSL_PROVIDER_load(through, "swiftasync-pkcs11"), "the token's instance loaded")
    }

    override func tearDown() {
        if let instance { OSSL_PROVIDER_unload(instance) }
        if let through { OSSL_LIB_CTX_free(through) }
        if let alone { OSSL_LIB_CTX_free(alone) }
        files.forEach { try? FileManager.default.removeItem(atPath: $0) }
        ERR_clear_error()
    }

    /// The token's key LABEL as each side loads it by URI.
    func tokenKeys(_ label: String) throws -> (alone: OpaquePointer, through: OpaquePointer) {
        let uri = SoftHSMToken.uri(label)
        let alone = try XCTUnwrap(PrivateKeys.load(uri: uri, in: alone), "\(uri) through pkcs11-provider alone")
        let through = try XCTUnwrap(PrivateKeys.load(uri: uri, in: through), "\(uri) through swiftasync")
        XCTAssertEqual(Self.providerName(alone), "pkcs11")
        XCTAssertEqual(Self.providerName(through), "swiftasync-pkcs11", "the key is the token instance's")
        return (alone, through)
    }

    static func providerName(_ key: OpaquePointer) -> String {
        EVP_PKEY_get0_provider(key).flatMap { OSSL_PROVIDER_get0_name($0) }.map { String(cString: $0) } ?? "none"
    }

    /// The token instance's own counters (its workers') are `swiftasync-pkcs11.ALGORITHM`.
    static let store = "swiftasync-pkcs11."

    /// Runs each body in its own job (MODE), or one after another on this thread (nil); the
    /// results and the change of the token's counters. The engine pool's stay as they were.
    func run(_ bodies: [() -> Int32], _ mode: WakeMode?, file: StaticString = #filePath, line: UInt = #line) throws
        -> (results: [Int32], delta: (String, String) -> Int) {
        let before = try LoadedProvider.stats(of: instance)
        let results = try mode.map { try AsyncBatch.run(bodies, mode: $0).results } ?? bodies.map { $0() }
        let after = try LoadedProvider.stats(of: instance)
        for algorithm in ["rsa_private_encrypt", "rsa_private_decrypt", "ecdsa_sign", "ecdh_derive", "sign_step"] {
            for counter in ["offloaded", "inline"] {
                XCTAssertEqual(after.count(algorithm, counter), before.count(algorithm, counter),
                               "\(algorithm) \(counter): token work counted on the engine's pool", file: file, line: line)
            }
        }
        return (results, { after.count(Self.store + $0, $1) - before.count(Self.store + $0, $1) })
    }

    static let modes: [WakeMode?] = [nil] + WakeMode.allCases.map { $0 }

    /// Offloaded in jobs, inline in plain calls.
    func assertCounted(_ run: (results: [Int32], delta: (String, String) -> Int), _ algorithm: String,
                       _ count: Int, _ mode: WakeMode?, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.delta(algorithm, mode == nil ? "inline" : "offloaded"), count,
                       "\(algorithm) \(mode?.rawValue ?? "plain")", file: file, line: line)
        if mode != nil { XCTAssertEqual(run.delta(algorithm, "inline"), 0, "\(algorithm): none inline in jobs") }
    }

    /// Each signer signs its digest (one job each, or plain calls); the results, signatures and counters' change.
    func sign(_ signers: [OpaquePointer], _ digests: [[UInt8]], _ mode: WakeMode?) throws
        -> (results: [Int32], delta: (String, String) -> Int, signatures: [[UInt8]]) {
        let boxes = signers.map { _ in OutputBox() }
        let run = try run(zip(zip(signers, digests), boxes).map { pair, box in
            { let (result, signature) = ProviderTests.sign(pair.0, pair.1); box.output = signature; return result }
        }, mode)
        return (run.results, run.delta, boxes.map(\.output))
    }

    func testKeysLoadByURIAndByPEMAndSignOnThePool() throws {
        for label in ["rsa", "p256"] {
            let byURI = try tokenKeys(label).through
            let byPEM = try XCTUnwrap(PrivateKeys.load(pem: SoftHSMToken.uriPEM(label), in: through),
                                      "\(label) from a PEM file holding its URI")
            defer { EVP_PKEY_free(byURI); EVP_PKEY_free(byPEM) }
            XCTAssertEqual(Self.providerName(byPEM), "swiftasync-pkcs11", "decoded as the token instance's key")
            let digest = randomBytes(32)
            let signers = [byURI, byPEM].map { ProviderTests.signer($0, in: through) }
            defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
            let run = try sign(signers, [digest, digest], .waitFD)
            XCTAssertEqual(run.results, [1, 1], label)
            assertCounted((run.results, run.delta), label == "rsa" ? "rsa_private_encrypt" : "ecdsa_sign", 2, .waitFD)
            for signature in run.signatures {
                XCTAssertTrue(ProviderTests.verify(fixture.keys[label]!, in: fixture.plain, padding: nil, signature, digest),
                              "\(label): verified with default's copy of the key")
            }
        }
    }

    /// Many signatures in flight at once, on the token's own workers (more of them than cores).
    func testManySignaturesInFlightOnTheTokensWorkers() throws {
        let (aloneKey, key) = try tokenKeys("rsa")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        for mode in WakeMode.allCases {
            let digests = (0..<64).map { _ in randomBytes(32) }
            let signers = digests.map { _ in ProviderTests.signer(key, in: through, padding: RSA_PKCS1_PADDING) }
            defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
            let run = try sign(signers, digests, mode)
            XCTAssertEqual(run.results, Array(repeating: 1, count: 64), mode.rawValue)
            assertCounted((run.results, run.delta), "rsa_private_encrypt", 64, mode)
            let verified = zip(digests, run.signatures).filter {
                ProviderTests.verify(fixture.keys["rsa"]!, in: fixture.plain, padding: RSA_PKCS1_PADDING, $1, $0)
            }
            XCTAssertEqual(verified.count, 64, "\(mode): every signature verified")
        }
        // Digest-signatures hold a token session from init to final: as many at once as a busy server has.
        let context = through!
        let messages = (0..<100).map { _ in randomBytes(100) }
        let boxes = messages.map { _ in OutputBox() }
        let run = try run(zip(messages, boxes).map { message, box in
            { let (result, signature) = Self.digestSign(key, in: context, padding: RSA_PKCS1_PADDING, message)
              box.output = signature; return result }
        }, .waitFD)
        XCTAssertEqual(run.results.filter { $0 == 1 }.count, 100, "every digest-signature made")
        XCTAssertEqual(zip(messages, boxes).filter {
            Self.digestVerify(fixture.keys["rsa"]!, in: fixture.plain, padding: RSA_PKCS1_PADDING, $1.output, $0)
        }.count, 100, "and verified")
        let pool = try LoadedProvider.stats(of: instance).algorithms[Self.store + "pool"] ?? [:]
        XCTAssertEqual(pool["threads"], 32, "a key store's own workers: 32 by default")
        XCTAssertGreaterThan(pool["queue_high_water"] ?? 0, 1, "operations queued together")
    }

    /// A token whose one worker is in a slow call (1 s) holds back nothing on the engine's pool:
    /// key exchanges of the default target complete while the token's signature is still in flight.
    func testSlowTokenDoesNotHoldBackTheEnginesPool() throws {
        let file = files[1]
        OSSL_PROVIDER_unload(instance)
        OSSL_LIB_CTX_free(through)
        through = try SoftHSMToken.context(
            fixture.token.throughConfiguration(swiftasync: LoadedEngine.defaultPath(), file: file,
                                               storeSettings: [("THREADS", "1"), ("WORKER_DELAY_USEC", "1000000")]),
            file: file)
        instance = try XCTUnwrap(OSSL_PROVIDER_load(through, "swiftasync-pkcs11"))
        let (aloneKey, key) = try tokenKeys("rsa")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        let signer = ProviderTests.signer(key, in: through, padding: RSA_PKCS1_PADDING)
        defer { EVP_PKEY_CTX_free(signer) }
        let digest = randomBytes(32)
        let start = try LoadedProvider.stats(of: instance)
        let slow = try AsyncBatch.start([{ ProviderTests.sign(signer, digest).0 }], mode: .waitFD)

        let context = through!
        let peers = try (0..<16).map { _ in try XCTUnwrap(LoadedProvider.generate("X25519", in: context)) }
        let ours = try XCTUnwrap(LoadedProvider.generate("X25519", in: context))
        defer { peers.forEach { EVP_PKEY_free($0) }; EVP_PKEY_free(ours) }
        let before = try LoadedProvider.stats(of: instance)
        let fast = try AsyncBatch.run(peers.map { peer in
            { Self.deriveInJob(ours, peer, in: context) }
        }, mode: .waitFD, timeout: 30)
        let during = try LoadedProvider.stats(of: instance)
        XCTAssertEqual(fast.results, Array(repeating: 1, count: 16))
        XCTAssertEqual(during.count("x25519_derive", "offloaded") - before.count("x25519_derive", "offloaded"), 16,
                       "on the engine's pool")
        let signature = Self.store + "rsa_private_encrypt"
        XCTAssertEqual(during.count(signature, "offloaded") - start.count(signature, "offloaded"), 1)
        XCTAssertEqual(during.count(signature, "completed") - start.count(signature, "completed"), 0,
                       "while the token's signature was still in flight")
        XCTAssertEqual(during.algorithms[Self.store + "pool"]?["threads"], 1)
        XCTAssertEqual(try slow.finish(timeout: 30).results, [1], "and the signature still completes")
    }

    static func deriveInJob(_ key: OpaquePointer, _ peer: OpaquePointer, in context: OpaquePointer) -> Int32 {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return 0 }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_derive_init(ctx) == 1, EVP_PKEY_derive_set_peer(ctx, peer) == 1 else { return 0 }
        var secret = [UInt8](repeating: 0, count: 32)
        var length = secret.count
        return EVP_PKEY_derive(ctx, &secret, &length)
    }

    /// PKCS#1 v1.5 byte-equal with pkcs11-provider alone and with default; PSS verified.
    func testRSASignatures() throws {
        let (aloneKey, key) = try tokenKeys("rsa")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        let plainKey = fixture.keys["rsa"]!
        for mode in Self.modes {
            for padding in [RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING] {
                let digests = (0..<6).map { _ in randomBytes(32) }
                let signers = digests.map { _ in ProviderTests.signer(key, in: through, padding: padding) }
                defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
                let run = try sign(signers, digests, mode)
                XCTAssertEqual(run.results, Array(repeating: 1, count: 6), "\(String(describing: mode)) padding \(padding)")
                assertCounted((run.results, run.delta), "rsa_private_encrypt", 6, mode)
                for (digest, signature) in zip(digests, run.signatures) {
                    XCTAssertTrue(ProviderTests.verify(plainKey, in: fixture.plain, padding: padding, signature, digest))
                    guard padding == RSA_PKCS1_PADDING else { continue }
                    for (other, context) in [(aloneKey, alone!), (plainKey, fixture.plain)] {
                        let signer = ProviderTests.signer(other, in: context, padding: padding)
                        XCTAssertEqual(signature, ProviderTests.sign(signer, digest).1, "byte-equal")
                        EVP_PKEY_CTX_free(signer)
                    }
                }
            }
        }
    }

    /// EVP_DigestSign with the token's key: init, update and final each on the pool in a job.
    func testRSADigestSignatures() throws {
        let (aloneKey, key) = try tokenKeys("rsa")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        let context = through!
        for mode in Self.modes {
            for padding in [RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING] {
                let messages = (0..<4).map { _ in randomBytes(200) }
                let boxes = messages.map { _ in OutputBox() }
                let run = try run(zip(messages, boxes).map { message, box in
                    { let (result, signature) = Self.digestSign(key, in: context, padding: padding, message)
                      box.output = signature; return result }
                }, mode)
                XCTAssertEqual(run.results, Array(repeating: 1, count: 4), "\(String(describing: mode)) padding \(padding)")
                assertCounted(run, "rsa_private_encrypt", 4, mode)
                XCTAssertGreaterThanOrEqual(run.delta("sign_step", mode == nil ? "inline" : "offloaded"), 8,
                                            "init and update of each signature counted as token steps")
                for (message, box) in zip(messages, boxes) {
                    XCTAssertTrue(Self.digestVerify(fixture.keys["rsa"]!, in: fixture.plain, padding: padding,
                                                    box.output, message))
                    if padding == RSA_PKCS1_PADDING {
                        XCTAssertEqual(box.output, Self.digestSign(aloneKey, in: alone, padding: padding, message).1,
                                       "byte-equal with pkcs11-provider alone")
                    }
                }
            }
        }
    }

    /// PKCS#1 v1.5 and OAEP (SHA-1, what SoftHSM offers) byte-equal; a corrupted ciphertext fails with an error on the caller's queue.
    func testRSADecryption() throws {
        let (aloneKey, key) = try tokenKeys("rsa")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        let plainKey = fixture.keys["rsa"]!
        for mode in Self.modes {
            for padding in [RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING] {
                let messages = (0..<4).map { _ in randomBytes(32) }
                var ciphertexts = try messages.map { try XCTUnwrap(Self.encrypt(plainKey, in: fixture.plain, padding: padding, $0)) }
                ciphertexts[3][5] ^= 0x55
                let decrypters = ciphertexts.map { _ in Self.decrypter(key, in: through, padding: padding) }
                defer { decrypters.forEach { EVP_PKEY_CTX_free($0) } }
                let boxes = ciphertexts.map { _ in OutputBox() }
                let errors = ciphertexts.map { _ in OutputBox() }
                let run = try run(zip(zip(decrypters, ciphertexts), zip(boxes, errors)).map { pair, out in
                    { ERR_clear_error()
                      let (result, plaintext) = Self.decrypt(pair.0, pair.1)
                      out.0.output = plaintext
                      out.1.output = [ERR_peek_error() != 0 ? 1 : 0]
                      return result }
                }, mode)
                let label = "\(mode?.rawValue ?? "plain") padding \(padding)"
                XCTAssertEqual(Array(run.results.prefix(3)), [1, 1, 1], label)
                XCTAssertNotEqual(run.results[3], 1, "\(label): the corrupted ciphertext fails")
                XCTAssertEqual(errors[3].output, [1], "\(label): with an error on the caller's queue")
                for (message, box) in zip(messages.prefix(3), boxes.prefix(3)) {
                    XCTAssertEqual(box.output, message, label)
                }
                let aloneDecrypter = Self.decrypter(aloneKey, in: alone, padding: padding)
                XCTAssertNotEqual(Self.decrypt(aloneDecrypter, ciphertexts[3]).0, 1, "pkcs11-provider alone fails it too")
                EVP_PKEY_CTX_free(aloneDecrypter)
                if mode != nil { XCTAssertEqual(run.delta("rsa_private_decrypt", "offloaded"), 4, label) }
            }
        }
        ERR_clear_error()
    }

    /// ECDSA on P-256 and P-384 verified by default; ECDH byte-equal with default's from the peer's side.
    func testECDSAAndECDH() throws {
        for (label, group) in [("p256", "P-256"), ("p384", "P-384")] {
            let (aloneKey, key) = try tokenKeys(label)
            defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
            let plainKey = fixture.keys[label]!
            for mode in Self.modes {
                let digests = (0..<4).map { _ in randomBytes(32) }
                let signers = digests.map { _ in ProviderTests.signer(key, in: through) }
                defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
                let signing = try sign(signers, digests, mode)
                XCTAssertEqual(signing.results, [1, 1, 1, 1], "\(label) \(String(describing: mode))")
                assertCounted((signing.results, signing.delta), "ecdsa_sign", 4, mode)
                for (digest, signature) in zip(digests, signing.signatures) {
                    XCTAssertTrue(ProviderTests.verify(plainKey, in: fixture.plain, padding: nil, signature, digest))
                }

                let peers = try (0..<4).map { _ in try XCTUnwrap(LoadedProvider.generate("EC", in: fixture.plain, group: group)) }
                defer { peers.forEach { EVP_PKEY_free($0) } }
                let deriver = try peers.map { peer -> OpaquePointer in
                    let ctx = try XCTUnwrap(EVP_PKEY_CTX_new_from_pkey(through, key, nil))
                    XCTAssertEqual(EVP_PKEY_derive_init(ctx), 1)
                    let peerPublic = try XCTUnwrap(LoadedProvider.copyPublic(peer, to: through))
                    defer { EVP_PKEY_free(peerPublic) }
                    XCTAssertEqual(EVP_PKEY_derive_set_peer(ctx, peerPublic), 1)
                    return ctx
                }
                defer { deriver.forEach { EVP_PKEY_CTX_free($0) } }
                let secrets = peers.map { _ in OutputBox() }
                let deriving = try run(zip(deriver, secrets).map { ctx, box in
                    { // pkcs11-provider derives exactly the size it answers (the field's)
                      var length = 0
                      guard EVP_PKEY_derive(ctx, nil, &length) == 1 else { return 0 }
                      var secret = [UInt8](repeating: 0, count: length)
                      let result = EVP_PKEY_derive(ctx, &secret, &length)
                      box.output = Array(secret.prefix(result == 1 ? length : 0)); return result }
                }, mode)
                XCTAssertEqual(deriving.results, [1, 1, 1, 1], "\(label) derive \(String(describing: mode))")
                assertCounted(deriving, "ecdh_derive", 4, mode)
                for (peer, box) in zip(peers, secrets) {
                    XCTAssertEqual(box.output, try Self.derive(peer, with: plainKey, in: fixture.plain), "byte-equal")
                }
            }
        }
    }

    // MARK: One operation each, in whatever context

    static func digestSign(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32,
                           _ message: [UInt8]) -> (Int32, [UInt8]) {
        guard let md = EVP_MD_CTX_new() else { return (0, []) }
        defer { EVP_MD_CTX_free(md) }
        var pctx: OpaquePointer?
        guard EVP_DigestSignInit_ex(md, &pctx, "SHA256", context, nil, key, nil) == 1 else { return (0, []) }
        if padding == RSA_PKCS1_PSS_PADDING { EVP_PKEY_CTX_set_rsa_padding(pctx, padding) }
        var signature = [UInt8](repeating: 0, count: 1024)
        var length = signature.count
        let result = EVP_DigestSign(md, &signature, &length, message, message.count)
        return (result, Array(signature.prefix(result == 1 ? length : 0)))
    }

    static func digestVerify(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32,
                             _ signature: [UInt8], _ message: [UInt8]) -> Bool {
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md) }
        var pctx: OpaquePointer?
        guard EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", context, nil, key, nil) == 1 else { return false }
        if padding == RSA_PKCS1_PSS_PADDING { EVP_PKEY_CTX_set_rsa_padding(pctx, padding) }
        return EVP_DigestVerify(md, signature, signature.count, message, message.count) == 1
    }

    static func setPadding(_ ctx: OpaquePointer, _ padding: Int32) {
        EVP_PKEY_CTX_set_rsa_padding(ctx, padding)
        if padding == RSA_PKCS1_OAEP_PADDING {
            EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha1())
            EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha1())
        }
    }

    static func encrypt(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32, _ message: [UInt8]) -> [UInt8]? {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(context, key, nil), EVP_PKEY_encrypt_init(ctx) == 1 else { return nil }
        defer { EVP_PKEY_CTX_free(ctx) }
        setPadding(ctx, padding)
        var out = [UInt8](repeating: 0, count: 1024)
        var length = out.count
        return EVP_PKEY_encrypt(ctx, &out, &length, message, message.count) == 1 ? Array(out.prefix(length)) : nil
    }

    static func decrypter(_ key: OpaquePointer, in context: OpaquePointer, padding: Int32) -> OpaquePointer {
        let ctx = EVP_PKEY_CTX_new_from_pkey(context, key, nil)!
        XCTAssertEqual(EVP_PKEY_decrypt_init(ctx), 1)
        setPadding(ctx, padding)
        return ctx
    }

    static func decrypt(_ ctx: OpaquePointer, _ ciphertext: [UInt8]) -> (Int32, [UInt8]) {
        var out = [UInt8](repeating: 0, count: 1024)
        var length = out.count
        let result = EVP_PKEY_decrypt(ctx, &out, &length, ciphertext, ciphertext.count)
        return (result, Array(out.prefix(result == 1 ? length : 0)))
    }

    static func derive(_ key: OpaquePointer, with peer: OpaquePointer, in context: OpaquePointer) throws -> [UInt8] {
        let ctx = try XCTUnwrap(EVP_PKEY_CTX_new_from_pkey(context, key, nil))
        defer { EVP_PKEY_CTX_free(ctx) }
        XCTAssertEqual(EVP_PKEY_derive_init(ctx), 1)
        XCTAssertEqual(EVP_PKEY_derive_set_peer(ctx, peer), 1)
        var secret = [UInt8](repeating: 0, count: 128)
        var length = secret.count
        XCTAssertEqual(EVP_PKEY_derive(ctx, &secret, &length), 1)
        return Array(secret.prefix(length))
    }
}

/// s_server -async with its certificate's key in the SoftHSM token, through
/// the repository's openssl-pkcs11.cnf: the RSA key from a PEM file holding
/// its URI (the DECODER path HAProxy's `crt` takes), the ECDSA key by its
/// `pkcs11:` URI (STORE). TLS 1.3 and 1.2: each handshake's token signature
/// (and its digest-sign steps) and the default target's key share and
/// secret are counted as offloaded.
final class KeyStoreServerTests: ServerTests {
    var fixture: KeyStoreTests.Fixture!

    override func frontEnd() throws -> (arguments: [String], environment: [String: String]) {
        let configuration = try Commands.writeRepositoryConf("openssl-pkcs11.cnf", to: "\(directory)/openssl-pkcs11.cnf",
                                                             modulePath: enginePath)
        return ([], ["OPENSSL_CONF": configuration,
                     "SWIFTASYNC_PKCS11_PROVIDER": fixture.token.providerModule,
                     "SWIFTASYNC_PKCS11_MODULE": SoftHSMToken.tokenModule,
                     "SWIFTASYNC_PKCS11_PIN": SoftHSMToken.pin,
                     "SOFTHSM2_CONF": fixture.token.directory + "/softhsm2.conf"])
    }

    static let labels = ["rsa": "rsa", "ecdsa": "p256"]

    override func keyArgument(_ certificate: String) -> String {
        certificate == "rsa" ? "\(directory)/rsa.key" : SoftHSMToken.uri(Self.labels[certificate]!)
    }

    override var alsoOffloaded: [String] { [KeyStoreTests.store + "sign_step"] }

    override func signatureCounter(_ signature: String) -> String { KeyStoreTests.store + signature }

    override func setUpWithError() throws {
        do { fixture = try KeyStoreTests.made.get() } catch { throw XCTSkip("no token here: \(error)") }
        directory = NSTemporaryDirectory() + "swiftasync-token-servers-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (certificate, label) in Self.labels {
            // The certificate is made from default's copy of the key, which then goes.
            let copy = "\(directory)/\(certificate)-copy.pem"
            try SoftHSMToken.privatePEM(fixture.keys[label]!).write(toFile: copy, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let made = try Commands.run(["openssl", "req", "-x509", "-new", "-key", copy, "-days", "2",
                                         "-subj", "/CN=localhost", "-out", "\(directory)/\(certificate).crt"])
            XCTAssertEqual(made.status, 0, made.output)
            try SoftHSMToken.uriPEM(label).write(toFile: "\(directory)/\(certificate).key", atomically: true, encoding: .utf8)
        }
    }

    override func testTLS12ECDHERSA() throws { try super.testTLS12ECDHERSA() }
    override func testTLS13P256WithRSACertificate() throws { try super.testTLS13P256WithRSACertificate() }
    override func testTLS13X25519WithECDSACertificate() throws { try super.testTLS13X25519WithECDSACertificate() }
    override func testTLS12ECDHEECDSAOnP256() throws { try super.testTLS12ECDHEECDSAOnP256() }

    /// engine-loader serve while its token stops answering: with DEADLINE_MSEC = 500 each
    /// handshake fails in about that time instead of hanging, the event loop goes on, `engine-loader
    /// stats` shows the missed deadlines and replaced workers; once the device answers, the same
    /// process serves again with nothing left in flight.
    func testEngineLoaderServeWhileTheTokenHangs() throws {
        let device = try FaultyDevice.shared()
        device.set(.none)
        defer { device.set(.none) }
        var (_, environment) = try frontEnd()
        let file = try XCTUnwrap(environment["OPENSSL_CONF"])
        let text = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertTrue(text.contains("DEADLINE_MSEC = 5000"), "the sample's deadline line")
        try text.replacingOccurrences(of: "DEADLINE_MSEC = 5000", with: "DEADLINE_MSEC = 500")
            .replacingOccurrences(of: "SPARE_THREADS = 32", with: "SPARE_THREADS = 4")
            .write(toFile: file, atomically: true, encoding: .utf8)
        environment["SWIFTASYNC_PKCS11_MODULE"] = device.module
        environment.merge(device.environment) { $1 }
        let port = try freeLoopbackPort()
        let server = try Commands.launch([Commands.engineLoader, "serve", "--provider", "--port", String(port),
                                          "--certificate", "\(directory)/rsa.crt", "--private-key", SoftHSMToken.uri("rsa")],
                                         environment: environment)
        defer { server.terminate(); server.waitUntilExit() }
        XCTAssertTrue(listens(server, on: port), "engine-loader serve is not listening on \(port)")
        func h2load(_ count: Int) throws -> String {
            try Commands.run(["h2load", "--h1", "-n", String(count), "-c", String(count), "https://127.0.0.1:\(port)/"]).output
        }
        func pool() -> [String: Int] {
            LiveStats.read(pid: server.processIdentifier).first?.stats.algorithms[KeyStoreTests.store + "pool"] ?? [:]
        }
        XCTAssertTrue(try h2load(10).contains("10 succeeded, 0 failed, 0 errored"), "before the fault")

        device.set(.hang)
        let hung = try h2load(8)
        XCTAssertTrue(hung.contains("0 succeeded, 8 failed"), "each handshake failed, none hung:\n\(hung)")
        XCTAssertTrue(server.isRunning, "the server goes on")
        var counters = pool()
        for _ in 0..<100 where (counters["deadlines_missed"] ?? 0) < 8 { usleep(50_000); counters = pool() }
        XCTAssertGreaterThanOrEqual(counters["deadlines_missed"] ?? 0, 8, "\(counters)")
        XCTAssertGreaterThan(counters["workers_replaced"] ?? 0, 0, "\(counters)")
        let shown = try Commands.run([Commands.engineLoader, "stats", "--pid", String(server.processIdentifier)]).output
        XCTAssertTrue(shown.contains("key store swiftasync-pkcs11: ") && shown.contains("deadlines_missed="), shown)

        device.set(.none)
        for _ in 0..<200 where pool()["in_flight"] != 0 || pool()["spare_threads_running"] != 0 { usleep(50_000) }
        XCTAssertEqual(pool()["in_flight"], 0, "the stuck calls returned: \(pool())")
        let after = try h2load(10)
        XCTAssertTrue(after.contains("10 succeeded, 0 failed, 0 errored"), "the same server serves again:\n\(after)\n\(pool())")
    }

    /// engine-loader serve, the reference event loop, with the token's key by URI and swiftasync as its provider.
    func testEngineLoaderServeWithTheTokensKey() throws {
        let port = try freeLoopbackPort()
        let output = Pipe()
        let server = try Commands.launch([Commands.engineLoader, "serve", "--provider", "--port", String(port),
                                          "--certificate", "\(directory)/rsa.crt", "--private-key", SoftHSMToken.uri("rsa"),
                                          "--handshakes", "40"], environment: try frontEnd().environment, output: output)
        XCTAssertTrue(listens(server, on: port), "engine-loader serve is not listening on \(port)")
        let h2load = try Commands.run(["h2load", "--h1", "-n", "40", "-c", "40", "https://127.0.0.1:\(port)/"]).output
        let text = Commands.finish(server, output)
        XCTAssertTrue(h2load.contains("40 succeeded, 0 failed, 0 errored"), h2load + text)
        XCTAssertTrue(text.contains("swiftasync provider, async mode, \(SoftHSMToken.uri("rsa"))"), text)
        let stats = EngineStats(parsing: text.split(separator: "\n").filter { !$0.hasPrefix("serving") && !$0.hasPrefix("handshakes=") }
            .joined(separator: "\n"))
        // The key store's workers never hand work back; a saturated engine pool's callers compute some X25519.
        XCTAssertEqual(stats.count(KeyStoreTests.store + "rsa_private_encrypt", "offloaded"), 40, text)
        XCTAssertTrue(EngineStats.countedOnceInJobs(offloaded: ["x25519_keygen", "x25519_derive"].map { stats.count($0, "offloaded") },
                                                    callerRan: stats.header["caller_ran"] ?? 0, expected: 40), text)
        for algorithm in [KeyStoreTests.store + "rsa_private_encrypt", "x25519_keygen", "x25519_derive"] {
            XCTAssertEqual(stats.count(algorithm, "failed"), 0)
        }
    }
}

/// HAProxy (ssl-mode-async, master-worker: it forks after loading the key)
/// and nginx (no async mode: inline) with the certificate's key in the
/// SoftHSM token, through openssl-pkcs11.cnf: server.pem holds the
/// certificate and the key's URI block, as pkcs11-provider's users write it,
/// and both read the key from there through the DECODER operation. Every
/// handshake's token signature and default key share and secret counted.
final class KeyStoreRealServerTests: RealServerTests {
    var fixture: KeyStoreTests.Fixture!

    /// One nginx process: in nginx's forked workers pkcs11-provider 1.0 finds
    /// the key's handle invalid ("The specified key handle is not valid"),
    /// without swiftasync as well; HAProxy's master-worker fork is unaffected.
    override var nginxForkedWorkers: Int { 0 }

    override var repositoryConf: String { "openssl-pkcs11.cnf" }

    /// The token's signature on its own workers; the key share on the engine's pool.
    override var handshakeAlgorithms: [String] {
        [KeyStoreTests.store + "rsa_private_encrypt", "x25519_keygen", "x25519_derive"]
    }

    override var serverEnvironment: [String: String] {
        ["OPENSSL_CONF": "\(directory)/openssl.cnf",
         "SWIFTASYNC_PKCS11_PROVIDER": fixture.token.providerModule,
         "SWIFTASYNC_PKCS11_MODULE": SoftHSMToken.tokenModule,
         "SWIFTASYNC_PKCS11_PIN": SoftHSMToken.pin,
         "SOFTHSM2_CONF": fixture.token.directory + "/softhsm2.conf"]
    }

    override func setUpWithError() throws {
        do { fixture = try KeyStoreTests.made.get() } catch { throw XCTSkip("no token here: \(error)") }
        try super.setUpWithError()
        let copy = "\(directory)/copy.pem"
        try SoftHSMToken.privatePEM(fixture.keys["rsa"]!).write(toFile: copy, atomically: true, encoding: .utf8)
        let made = try run(["openssl", "req", "-x509", "-new", "-key", copy, "-days", "2", "-subj", "/CN=localhost",
                            "-out", "\(directory)/server.crt"])
        try FileManager.default.removeItem(atPath: copy)
        XCTAssertEqual(made.status, 0, made.output)
        let uri = SoftHSMToken.uriPEM("rsa")
        try uri.write(toFile: "\(directory)/server.key", atomically: true, encoding: .utf8)
        try (String(contentsOfFile: "\(directory)/server.crt", encoding: .utf8) + uri)
            .write(toFile: "\(directory)/server.pem", atomically: true, encoding: .utf8)
    }

    override func testHAProxyAsyncModeOneAndTwoThreads() throws { try super.testHAProxyAsyncModeOneAndTwoThreads() }
    override func testNginxWithOpenSSLConf() throws { try super.testNginxWithOpenSSLConf() }
    override func testNginxWithSSLEngineDirective() throws {
        throw XCTSkip("ssl_engine names the engine, not the provider")
    }
}
