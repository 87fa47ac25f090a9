import COpenSSL
import EngineHarness
import XCTest

/// The provider's private-key steps in 8-lane calls (lanes for any fill, so
/// every eligible operation goes through them where this build and CPU run
/// them): results as the default provider gives them, and the key each
/// context was initialised with is the key its lanes use, however contexts
/// are freed, reused, duplicated or given another peer.
final class ProviderLaneTests: ProviderTestCase {
    var lanesRun = false

    override var providerSettings: [(String, String)] { [("MULTIBUFFER_MIN_FILL", "1")] }

    override func setUpWithError() throws {
        try super.setUpWithError()
        lanesRun = try loaded.stats().multibuffer == "in_use"
    }

    /// Runs the bodies in async jobs; the change of `algorithm`'s counters (offloaded, lanes).
    func inJobs(_ algorithm: String, _ bodies: [() -> Int32]) throws -> (results: [Int32], offloaded: Int, lanes: Int) {
        let before = try loaded.stats()
        let results = try AsyncBatch.run(bodies, mode: .waitFD).results
        let after = try loaded.stats()
        return (results, after.count(algorithm, "offloaded") - before.count(algorithm, "offloaded"),
                after.count(algorithm, "lanes") - before.count(algorithm, "lanes"))
    }

    func assertInLanes(_ run: (results: [Int32], offloaded: Int, lanes: Int), _ count: Int, _ label: String) {
        XCTAssertEqual(run.results, Array(repeating: 1, count: count), label)
        XCTAssertEqual(run.offloaded, count, "\(label): offloaded")
        if lanesRun { XCTAssertEqual(run.lanes, count, "\(label): in lanes") }
    }

    func signer(_ key: OpaquePointer, in context: OpaquePointer, digest: Bool = true) -> OpaquePointer {
        let signer = EVP_PKEY_CTX_new_from_pkey(context, key, nil)!
        XCTAssertEqual(EVP_PKEY_sign_init(signer), 1)
        if digest { XCTAssertEqual(EVP_PKEY_CTX_set_signature_md(signer, EVP_sha256()), 1) }
        return signer
    }

    func plainSignature(_ key: OpaquePointer, _ input: [UInt8], digest: Bool = true) throws -> [UInt8] {
        let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
        let plainSigner = signer(plainKey, in: loaded.plain, digest: digest)
        defer { EVP_PKEY_CTX_free(plainSigner); EVP_PKEY_free(plainKey) }
        return ProviderTests.sign(plainSigner, input).1
    }

    /// RSA-2048/3072/4096 PKCS#1 v1.5, with SHA-256 and without a digest (openssl speed's way): byte-equal.
    func testRSASignaturesInLanes() throws {
        for bits: Int32 in [2048, 3072, 4096] {
            let keys = try (0..<3).map { _ in try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context, bits: bits)) }
            defer { keys.forEach { EVP_PKEY_free($0) } }
            for digest in [true, false] {
                let inputs = (0..<8).map { _ in randomBytes(digest ? 32 : 36) }
                let signers = inputs.indices.map { signer(keys[$0 % keys.count], in: loaded.context, digest: digest) }
                defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
                let boxes = inputs.map { _ in OutputBox() }
                let run = try inJobs("rsa_private_encrypt", zip(zip(signers, inputs), boxes).map { pair, box in
                    { let (result, signature) = ProviderTests.sign(pair.0, pair.1); box.output = signature; return result }
                })
                assertInLanes(run, 8, "RSA-\(bits) digest \(digest)")
                for (index, box) in boxes.enumerated() {
                    XCTAssertEqual(box.output, try plainSignature(keys[index % keys.count], inputs[index], digest: digest),
                                   "RSA-\(bits) digest \(digest): byte-equal with the default provider")
                }
            }
        }
    }

    /// ECDSA on the three curves, different keys in one call: verified by the default provider.
    func testECDSAInLanes() throws {
        for group in ["P-256", "P-384", "P-521"] {
            let keys = try (0..<3).map { _ in try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: group)) }
            defer { keys.forEach { EVP_PKEY_free($0) } }
            let digests = (0..<8).map { _ in randomBytes(32) }
            let signers = digests.indices.map { signer(keys[$0 % keys.count], in: loaded.context) }
            defer { signers.forEach { EVP_PKEY_CTX_free($0) } }
            let boxes = digests.map { _ in OutputBox() }
            let run = try inJobs("ecdsa_sign", zip(zip(signers, digests), boxes).map { pair, box in
                { let (result, signature) = ProviderTests.sign(pair.0, pair.1); box.output = signature; return result }
            })
            assertInLanes(run, 8, group)
            for (index, box) in boxes.enumerated() {
                let plainKey = try XCTUnwrap(LoadedProvider.copy(keys[index % keys.count], to: loaded.plain))
                defer { EVP_PKEY_free(plainKey) }
                XCTAssertTrue(ProviderTests.verify(plainKey, in: loaded.plain, padding: nil, box.output, digests[index]), group)
            }
        }
    }

    /// EVP_DigestSign (a TLS handshake's way): RSA PKCS#1 v1.5 byte-equal, RSA
    /// PSS and ECDSA verified; the digest is ours, the signature in lanes.
    func testDigestSignInLanes() throws {
        let rsa = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        let ec = try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: "P-256"))
        defer { EVP_PKEY_free(rsa); EVP_PKEY_free(ec) }
        for (label, key, padding, counter) in [("RSA PKCS#1", rsa, RSA_PKCS1_PADDING, "rsa_private_encrypt"),
                                               ("RSA PSS", rsa, RSA_PKCS1_PSS_PADDING, "rsa_private_encrypt"),
                                               ("ECDSA", ec, 0, "ecdsa_sign")] {
            let messages = (0..<8).map { _ in randomBytes(100 + Int.random(in: 0..<400)) }
            let contexts = messages.map { _ -> OpaquePointer in
                let context = EVP_MD_CTX_new()!
                var pkeyContext: OpaquePointer?
                XCTAssertEqual(EVP_DigestSignInit_ex(context, &pkeyContext, "SHA384", loaded.context, nil, key, nil), 1)
                if padding != 0 {
                    XCTAssertEqual(EVP_PKEY_CTX_set_rsa_padding(pkeyContext, padding), 1)
                    if padding == RSA_PKCS1_PSS_PADDING { XCTAssertEqual(EVP_PKEY_CTX_set_rsa_pss_saltlen(pkeyContext, -1), 1) }
                }
                return context
            }
            defer { contexts.forEach { EVP_MD_CTX_free($0) } }
            let boxes = messages.map { _ in OutputBox() }
            let run = try inJobs(counter, zip(zip(contexts, messages), boxes).map { pair, box in
                { var signature = [UInt8](repeating: 0, count: 512); var length = signature.count
                  // In two pieces: update, then final.
                  let half = pair.1.count / 2
                  guard EVP_DigestSignUpdate(pair.0, pair.1, half) == 1 else { return 0 }
                  let result = pair.1.suffix(from: half).withUnsafeBufferPointer {
                      EVP_DigestSignUpdate(pair.0, $0.baseAddress, $0.count) == 1
                          ? EVP_DigestSignFinal(pair.0, &signature, &length) : 0
                  }
                  box.output = Array(signature.prefix(result == 1 ? length : 0)); return result }
            })
            assertInLanes(run, 8, label)
            let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
            defer { EVP_PKEY_free(plainKey) }
            for (message, box) in zip(messages, boxes) {
                let verifier = EVP_MD_CTX_new()!
                defer { EVP_MD_CTX_free(verifier) }
                var pkeyContext: OpaquePointer?
                XCTAssertEqual(EVP_DigestVerifyInit_ex(verifier, &pkeyContext, "SHA384", loaded.plain, nil, plainKey, nil), 1)
                if padding != 0 { EVP_PKEY_CTX_set_rsa_padding(pkeyContext, padding) }
                XCTAssertEqual(EVP_DigestVerify(verifier, box.output, box.output.count, message, message.count), 1,
                               "\(label): verified by the default provider")
                if padding == RSA_PKCS1_PADDING {
                    let signer = EVP_MD_CTX_new()!
                    defer { EVP_MD_CTX_free(signer) }
                    var signature = [UInt8](repeating: 0, count: 512)
                    var length = signature.count
                    XCTAssertEqual(EVP_DigestSignInit_ex(signer, nil, "SHA384", loaded.plain, nil, plainKey, nil), 1)
                    XCTAssertEqual(EVP_DigestSign(signer, &signature, &length, message, message.count), 1)
                    XCTAssertEqual(box.output, Array(signature.prefix(length)), "\(label): byte-equal")
                }
            }
        }
    }

    /// The default provider's secret for `own` and `peer` (both this test's keys).
    func plainSecret(_ own: OpaquePointer, _ peer: OpaquePointer) throws -> [UInt8] {
        let plainOwn = try XCTUnwrap(LoadedProvider.copy(own, to: loaded.plain))
        let plainPeer = try XCTUnwrap(LoadedProvider.copyPublic(peer, to: loaded.plain))
        defer { EVP_PKEY_free(plainOwn); EVP_PKEY_free(plainPeer) }
        return try derive(in: loaded.plain, plainOwn, plainPeer)
    }

    func derive(in context: OpaquePointer, _ own: OpaquePointer, _ peer: OpaquePointer) throws -> [UInt8] {
        let deriver = try XCTUnwrap(EVP_PKEY_CTX_new_from_pkey(context, own, nil))
        defer { EVP_PKEY_CTX_free(deriver) }
        var secret = [UInt8](repeating: 0, count: 132)
        var length = secret.count
        guard EVP_PKEY_derive_init(deriver) == 1, EVP_PKEY_derive_set_peer(deriver, peer) == 1,
              EVP_PKEY_derive(deriver, &secret, &length) == 1 else { return [] }
        return Array(secret.prefix(length))
    }

    /// ECDH on the three curves and X25519: byte-equal secrets.
    func testKeyExchangesInLanes() throws {
        for (type, group, counter) in [("EC", "P-256", "ecdh_derive"), ("EC", "P-384", "ecdh_derive"),
                                       ("EC", "P-521", "ecdh_derive"), ("X25519", nil, "x25519_derive")] {
            let label = group ?? type
            let owns = try (0..<8).map { _ in try XCTUnwrap(LoadedProvider.generate(type, in: loaded.context, group: group)) }
            let peers = try (0..<8).map { _ in try XCTUnwrap(LoadedProvider.generate(type, in: loaded.context, group: group)) }
            defer { (owns + peers).forEach { EVP_PKEY_free($0) } }
            let derivers = zip(owns, peers).map { own, peer -> OpaquePointer in
                let deriver = EVP_PKEY_CTX_new_from_pkey(loaded.context, own, nil)!
                XCTAssertEqual(EVP_PKEY_derive_init(deriver), 1)
                XCTAssertEqual(EVP_PKEY_derive_set_peer(deriver, peer), 1)
                return deriver
            }
            defer { derivers.forEach { EVP_PKEY_CTX_free($0) } }
            let boxes = derivers.map { _ in OutputBox() }
            let run = try inJobs(counter, zip(derivers, boxes).map { deriver, box in
                { var secret = [UInt8](repeating: 0, count: 132); var length = secret.count
                  let result = EVP_PKEY_derive(deriver, &secret, &length)
                  box.output = Array(secret.prefix(result == 1 ? length : 0)); return result }
            })
            assertInLanes(run, 8, label)
            for (index, box) in boxes.enumerated() {
                XCTAssertEqual(box.output, try plainSecret(owns[index], peers[index]), "\(label): byte-equal")
            }
        }
    }

    /// EC and X25519 key pairs made in lanes and imported into the target's
    /// key manager: each passes the default provider's pair-wise check, and
    /// derives the default provider's secret with a peer.
    func testKeyGenerationInLanes() throws {
        for (type, group, counter) in [("EC", "P-256", "ec_keygen"), ("EC", "P-384", "ec_keygen"),
                                       ("EC", "P-521", "ec_keygen"), ("X25519", nil, "x25519_keygen")] {
            let label = group ?? type
            let generators = keyGenerators(type, group: group, count: 8, in: loaded.context)
            defer { generators.forEach { EVP_PKEY_CTX_free($0) } }
            let keys = generators.map { _ in GeneratedKey() }
            let run = try inJobs(counter, zip(generators, keys).map { generator, box in { EVP_PKEY_generate(generator, &box.key) } })
            assertInLanes(run, 8, label)
            let peer = try XCTUnwrap(LoadedProvider.generate(type, in: loaded.context, group: group))
            defer { EVP_PKEY_free(peer) }
            var publicKeys = Set<[UInt8]>()
            for box in keys {
                let key = try XCTUnwrap(box.key)
                let plainKey = try XCTUnwrap(LoadedProvider.copy(key, to: loaded.plain))
                defer { EVP_PKEY_free(plainKey) }
                let checker = EVP_PKEY_CTX_new_from_pkey(loaded.plain, plainKey, nil)!
                XCTAssertEqual(EVP_PKEY_pairwise_check(checker), 1, "\(label): the key pair agrees")
                EVP_PKEY_CTX_free(checker)
                XCTAssertEqual(try derive(in: loaded.context, key, peer), try plainSecret(key, peer), "\(label): its secret")
                var length = 0
                EVP_PKEY_get_octet_string_param(key, "pub", nil, 0, &length)
                var encoded = [UInt8](repeating: 0, count: length)
                EVP_PKEY_get_octet_string_param(key, "pub", &encoded, length, &length)
                publicKeys.insert(encoded)
            }
            XCTAssertEqual(publicKeys.count, 8, "\(label): eight different keys")
        }
    }

    /// Contexts freed and made again (their addresses come back), for keys in
    /// turn, a context duplicated, a peer replaced: each result is the one
    /// its own key and peer give, never a remembered one.
    func testEveryContextUsesItsOwnKeyAndPeer() throws {
        let keys = try (0..<2).map { _ in try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: "P-256")) }
        let peers = try (0..<2).map { _ in try XCTUnwrap(LoadedProvider.generate("EC", in: loaded.context, group: "P-256")) }
        defer { (keys + peers).forEach { EVP_PKEY_free($0) } }
        var inLanes = 0
        for round in 0..<12 {
            let own = keys[round % 2], peer = peers[(round / 2) % 2]
            let deriver = EVP_PKEY_CTX_new_from_pkey(loaded.context, own, nil)!
            XCTAssertEqual(EVP_PKEY_derive_init(deriver), 1)
            XCTAssertEqual(EVP_PKEY_derive_set_peer(deriver, peers[(round + 1) % 2]), 1)
            XCTAssertEqual(EVP_PKEY_derive_set_peer(deriver, peer), 1, "the peer replaced")
            let copy = try XCTUnwrap(EVP_PKEY_CTX_dup(deriver))
            let boxes = [OutputBox(), OutputBox()]
            let run = try inJobs("ecdh_derive", zip([deriver, copy], boxes).map { deriver, box in
                { var secret = [UInt8](repeating: 0, count: 66); var length = secret.count
                  let result = EVP_PKEY_derive(deriver, &secret, &length)
                  box.output = Array(secret.prefix(result == 1 ? length : 0)); return result }
            })
            EVP_PKEY_CTX_free(copy)
            EVP_PKEY_CTX_free(deriver)
            XCTAssertEqual(run.results, [1, 1], "round \(round)")
            inLanes += run.lanes
            let expected = try plainSecret(own, peer)
            XCTAssertEqual(boxes[0].output, expected, "round \(round): the context's own key and last peer")
            XCTAssertEqual(boxes[1].output, expected, "round \(round): its duplicate")
        }
        if lanesRun { XCTAssertGreaterThan(inLanes, 0, "the lanes ran") }

        // One signing context used by turns with sign and verify: the signature stays the key's.
        let rsa = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        defer { EVP_PKEY_free(rsa) }
        let context = signer(rsa, in: loaded.context)
        defer { EVP_PKEY_CTX_free(context) }
        for round in 0..<4 {
            let digest = randomBytes(32)
            let box = OutputBox()
            let run = try inJobs("rsa_private_encrypt", [{ let (result, signature) = ProviderTests.sign(context, digest); box.output = signature; return result }])
            XCTAssertEqual(run.results, [1], "round \(round)")
            XCTAssertEqual(box.output, try plainSignature(rsa, digest), "round \(round): byte-equal")
            XCTAssertEqual(EVP_PKEY_verify_init(context), 1)
            XCTAssertEqual(EVP_PKEY_CTX_set_signature_md(context, EVP_sha256()), 1)
            XCTAssertEqual(EVP_PKEY_verify(context, box.output, box.output.count, digest, digest.count), 1)
            XCTAssertEqual(EVP_PKEY_sign_init(context), 1)
            XCTAssertEqual(EVP_PKEY_CTX_set_signature_md(context, EVP_sha256()), 1)
        }
    }
}
