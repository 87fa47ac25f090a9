import COpenSSL
import EngineHarness
import XCTest

/// Invalid peer keys are rejected with an error exactly where default OpenSSL
/// rejects them: at decoding (before the engine sees them) or at derivation
/// (on a worker, the error carried back to the caller's queue).
final class InvalidPeerTests: EngineTestCase {
    struct Outcome: Equatable, CustomStringConvertible {
        var stage: String
        var errors: [String]
        var secret: [UInt8]
        var description: String { "\(stage) \(errors) \(secret.count) bytes" }
    }

    static func errorCodes() -> [String] { OpenSSLErrors.codes().map { "\($0.library)/\($0.reason)" } }

    /// Builds the peer from its encoding and derives, the way TLS does; in `mode`.
    func derive(_ key: OpaquePointer, peerEncoding: [UInt8], makePeer: @escaping ([UInt8]) -> OpaquePointer?,
                mode: ExecutionMode) throws -> Outcome {
        let box = OutcomeBox()
        _ = try SelfCheck.inMode(mode) {
            ERR_clear_error()
            guard let peer = makePeer(peerEncoding) else {
                box.outcome = Outcome(stage: "decode", errors: Self.errorCodes(), secret: [])
                return 0
            }
            defer { EVP_PKEY_free(peer) }
            let (result, secret) = ECXVector.derive(key, peer)
            box.outcome = Outcome(stage: result > 0 ? "derived" : "derive", errors: Self.errorCodes(), secret: secret)
            return result
        }
        return box.outcome
    }

    /// The same private key on the engine and on default OpenSSL.
    func keyPair(_ generate: () -> OpaquePointer?) throws -> (engine: OpaquePointer, software: OpaquePointer) {
        let engineKey = try XCTUnwrap(generate())
        var der: UnsafeMutablePointer<UInt8>?
        let length = i2d_PrivateKey(engineKey, &der)
        defer { CRYPTO_free(der, #file, #line) }
        let softwareKey = try engine.withSoftwareDefaults {
            var cursor = UnsafePointer(der)
            return try XCTUnwrap(d2i_AutoPrivateKey(nil, &cursor, Int(length)))
        }
        return (engineKey, softwareKey)
    }

    func assertSameOutcomes(_ cases: [(String, [UInt8])], keys: (engine: OpaquePointer, software: OpaquePointer),
                            makePeer: @escaping ([UInt8]) -> OpaquePointer?, expectFailures: Int) throws {
        var failures = 0
        for (name, encoding) in cases {
            let expected = try engine.withSoftwareDefaults {
                try derive(keys.software, peerEncoding: encoding, makePeer: makePeer, mode: .sync)
            }
            for mode in [ExecutionMode.waitFD, .callback] {
                let got = try derive(keys.engine, peerEncoding: encoding, makePeer: makePeer, mode: mode)
                XCTAssertEqual(got.stage, expected.stage, "\(name) \(mode.rawValue)")
                XCTAssertEqual(got.secret, expected.secret, "\(name) \(mode.rawValue)")
                if got.stage == "decode" {
                    // Decoding happens before the engine. With X25519/X448 registered, OpenSSL
                    // decodes raw keys through its legacy method, which adds its own entry
                    // ahead of the same EVP error: default OpenSSL's errors must all be there.
                    XCTAssertEqual(got.errors.last, expected.errors.last, "\(name) \(mode.rawValue)")
                    XCTAssertTrue(Set(expected.errors).isSubset(of: got.errors), "\(name) \(mode.rawValue): \(got) vs \(expected)")
                } else {
                    XCTAssertEqual(got.errors, expected.errors, "\(name) \(mode.rawValue)")
                }
            }
            if expected.stage != "derived" {
                failures += 1
                XCTAssertFalse(expected.errors.isEmpty, "\(name): default OpenSSL's rejection leaves an error")
            }
        }
        XCTAssertEqual(failures, expectFailures, "how many of the cases default OpenSSL rejects")
    }

    func testECPeerPoints() throws {
        for group in ["P-256", "P-384"] {
            let keys = try keyPair { try? TLSIdentity(ecGroup: group).keyCopy() }
            defer { EVP_PKEY_free(keys.engine); EVP_PKEY_free(keys.software) }
            let valid = try XCTUnwrap(TLSIdentity(ecGroup: group).encodedPublicKey())
            var offCurve = valid; offCurve[offCurve.count - 1] ^= 1
            let template = keys.software
            let makePeer: ([UInt8]) -> OpaquePointer? = { encoding in
                let peer = EVP_PKEY_new()!
                guard EVP_PKEY_copy_parameters(peer, template) == 1,
                      EVP_PKEY_set1_encoded_public_key(peer, encoding, encoding.count) == 1 else {
                    EVP_PKEY_free(peer)
                    return nil
                }
                return peer
            }
            try assertSameOutcomes([
                ("valid", valid), ("off the curve", offCurve), ("at infinity", [0x00]),
                ("truncated", Array(valid.dropLast())), ("bad prefix", [0x05] + valid.dropFirst()),
                ("empty", []),
            ], keys: keys, makePeer: makePeer, expectFailures: 5)
        }
    }

    /// The point at infinity handed straight to ECDH_compute_key, bypassing decoding.
    func testECDHWithPointAtInfinityFailsOnTheWorkerLikeSoftware() throws {
        let key = try ECKeyPair(curve: ECCurves.tls[0], mode: .sync)
        let infinity = EC_POINT_new(key.group)!
        defer { EC_POINT_free(infinity) }
        EC_POINT_set_to_infinity(key.group, infinity)
        ERR_clear_error()
        let expected = ECKeyPair.derive(key.softwareKey, peer: infinity)
        let expectedErrors = Self.errorCodes()
        XCTAssertLessThanOrEqual(expected.0, 0)
        XCTAssertFalse(expectedErrors.isEmpty)
        let engineKey = key.engineKey
        let errors = OutcomeBox()
        let counters = try countersDelta {
            let result = try SelfCheck.inMode(.waitFD) {
                ERR_clear_error()
                let (result, _) = ECKeyPair.derive(engineKey, peer: infinity)
                errors.outcome.errors = Self.errorCodes()
                return result
            }
            XCTAssertEqual(result, expected.0)
        }
        XCTAssertEqual(errors.outcome.errors, expectedErrors)
        XCTAssertEqual(delta(counters, "ecdh_derive", "failed"), 1)
    }

    func testX25519AndX448PeerKeys() throws {
        for vector in ECXVector.all {
            let keys = try keyPair { vector.privateKey(vector.alicePrivate) }
            defer { EVP_PKEY_free(keys.engine); EVP_PKEY_free(keys.software) }
            var zero = [UInt8](repeating: 0, count: vector.keyLength)
            var one = zero; one[0] = 1
            let makePeer: ([UInt8]) -> OpaquePointer? = { vector.publicKey($0) }
            try assertSameOutcomes([
                ("valid", vector.bobPublic), ("u = 0", zero), ("u = 1", one),
                ("short", Array(vector.bobPublic.dropLast())), ("long", vector.bobPublic + [0]),
            ], keys: keys, makePeer: makePeer, expectFailures: 4)
            zero.removeAll()
        }
    }

    /// A secret buffer shorter than the secret: refused as default OpenSSL
    /// refuses it, and not one byte written (the built-in method would write
    /// the whole secret; the fuzzer found the engine doing the same).
    func testShortSecretBufferIsRefusedUnwritten() throws {
        for vector in ECXVector.all {
            let keys = try keyPair { vector.privateKey(vector.alicePrivate) }
            let peer = try XCTUnwrap(vector.publicKey(vector.bobPublic))
            defer { EVP_PKEY_free(keys.engine); EVP_PKEY_free(keys.software); EVP_PKEY_free(peer) }
            let box = OutcomeBox()
            func deriveShort(_ key: OpaquePointer) -> Int32 {
                ERR_clear_error()
                guard let context = EVP_PKEY_CTX_new(key, nil) else { return -2 }
                defer { EVP_PKEY_CTX_free(context) }
                guard EVP_PKEY_derive_init(context) > 0, EVP_PKEY_derive_set_peer(context, peer) > 0 else { return -3 }
                var buffer = [UInt8](repeating: 0xA5, count: 64)
                var length = vector.keyLength - 1
                let result = EVP_PKEY_derive(context, &buffer, &length)
                box.outcome = Outcome(stage: "derive", errors: Self.errorCodes(), secret: buffer)
                return result
            }
            let expected = engine.withSoftwareDefaults { deriveShort(keys.software) }
            let expectedErrors = box.outcome.errors
            XCTAssertLessThanOrEqual(expected, 0)
            for mode in ExecutionMode.allCases {
                let result = try SelfCheck.inMode(mode) { deriveShort(keys.engine) }
                XCTAssertEqual(result, expected, "\(vector.name) \(mode.rawValue)")
                XCTAssertEqual(box.outcome.errors, expectedErrors, "\(vector.name) \(mode.rawValue)")
                XCTAssertEqual(box.outcome.secret, [UInt8](repeating: 0xA5, count: 64), "\(vector.name) \(mode.rawValue): buffer written")
            }
        }
    }
}

final class OutcomeBox: @unchecked Sendable {
    var outcome = InvalidPeerTests.Outcome(stage: "not run", errors: [], secret: [])
}
