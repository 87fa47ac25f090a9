import COpenSSL
import EngineHarness
import XCTest

/// Elliptic curves through the engine, against default OpenSSL: keygen,
/// ECDH, ECDSA on every named curve; X25519 and X448 against RFC 7748.
final class ECDifferentialTests: EngineTestCase {
    let ecAlgorithms = ["ec_keygen", "ecdh_derive", "ecdsa_sign", "ecdsa_sign_setup"]

    func testTLSCurvesInEveryMode() throws {
        for curve in ECCurves.tls {
            for mode in ExecutionMode.allCases {
                var check = CheckResult()
                let counters = try countersDelta { check = try SelfCheck.ec(curve: curve, mode: mode, count: 4) }
                assertPassed(check)
                // One keygen, four ECDH, four ECDSA + one via sign_setup (two operations).
                let expected = ["ec_keygen": 1, "ecdh_derive": 4, "ecdsa_sign": 5, "ecdsa_sign_setup": 1]
                for (algorithm, count) in expected {
                    let route = mode == .sync ? "inline" : "offloaded"
                    XCTAssertEqual(delta(counters, algorithm, route), count, "\(curve) \(mode.rawValue) \(algorithm)")
                    XCTAssertEqual(delta(counters, algorithm, "failed"), 0, "\(curve) \(mode.rawValue) \(algorithm)")
                }
            }
        }
    }

    /// Every built-in named curve default OpenSSL can use, on the pool.
    func testEveryNamedCurveOnWaitFDs() throws {
        var checked: [String] = []
        for curve in ECCurves.all where SelfCheck.softwareSupports(curve) {
            assertPassed(try SelfCheck.ec(curve: curve, mode: .waitFD, count: 1))
            checked.append(curve.name)
        }
        XCTAssertGreaterThan(checked.count, 60, "the built-in curves: \(checked)")
        XCTAssertTrue(checked.contains("secp256k1") && checked.contains("brainpoolP512r1"), "\(checked)")
    }

    func testX25519AndX448AgainstRFC7748InEveryMode() throws {
        for vector in ECXVector.all {
            let prefix = vector.name.lowercased()
            for mode in ExecutionMode.allCases {
                var check = CheckResult()
                let counters = try countersDelta { check = try SelfCheck.ecx(vector, mode: mode, count: 4) }
                assertPassed(check)
                let route = mode == .sync ? "inline" : "offloaded"
                XCTAssertEqual(delta(counters, "\(prefix)_keygen", route), 4, "\(vector.name) \(mode.rawValue)")
                XCTAssertGreaterThanOrEqual(delta(counters, "\(prefix)_derive", route), 2, "\(vector.name) \(mode.rawValue)")
                XCTAssertEqual(delta(counters, "\(prefix)_derive", "failed"), 0)
            }
        }
    }

    /// Keys made by the engine's X25519 keygen work everywhere in OpenSSL.
    func testGeneratedX25519KeysExportAndEncode() throws {
        for vector in ECXVector.all {
            let box = KeyBox()
            _ = try SelfCheck.inMode(.waitFD) { box.key = vector.generate(); return box.key == nil ? 0 : 1 }
            let key = try XCTUnwrap(box.key)
            defer { EVP_PKEY_free(key) }
            XCTAssertEqual(ECXVector.rawPublic(key).count, vector.keyLength)
            XCTAssertEqual(ECXVector.rawPrivate(key).count, vector.keyLength)
            var der: UnsafeMutablePointer<UInt8>?
            let length = i2d_PUBKEY(key, &der)
            XCTAssertGreaterThan(length, 0, "SubjectPublicKeyInfo encoding")
            var cursor = UnsafePointer(der)
            let decoded = d2i_PUBKEY(nil, &cursor, Int(length))
            XCTAssertNotNil(decoded)
            XCTAssertEqual(decoded.map(ECXVector.rawPublic), ECXVector.rawPublic(key))
            EVP_PKEY_free(decoded)
            CRYPTO_free(der, #file, #line)
            var encoded: UnsafeMutablePointer<UInt8>?
            let encodedLength = EVP_PKEY_get1_encoded_public_key(key, &encoded)
            XCTAssertEqual(encodedLength, vector.keyLength, "the TLS key share encoding")
            CRYPTO_free(encoded, #file, #line)
        }
    }
}
