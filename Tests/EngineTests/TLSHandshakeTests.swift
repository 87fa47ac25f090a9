import COpenSSL
import EngineHarness
import XCTest

/// Real TLS handshakes over BIO pairs, the server in SSL_MODE_ASYNC: the
/// server's RSA private operations run on the pool and the handshake completes.
final class TLSHandshakeTests: EngineTestCase {
    func handshakes(rsaBits: Int = 2048, _ configure: (inout TLSHandshakes.Options) -> Void) throws
        -> (TLSHandshakes.Outcome, (before: EngineStats, after: EngineStats)) {
        let identity = try TLSIdentity(rsaBits: rsaBits)
        var options = TLSHandshakes.Options()
        configure(&options)
        var outcome = TLSHandshakes.Outcome()
        let counters = try countersDelta { outcome = try TLSHandshakes.run(identity: identity, options: options) }
        XCTAssertEqual(outcome.completed, options.connections)
        // A worker can finish before the job checks, so not every handshake needs to pause.
        XCTAssertGreaterThan(outcome.wantAsync, 0, "server handshakes must have paused for the engine")
        return (outcome, counters)
    }

    func testTLS13RSAPSSWithAsyncCallback() throws {
        let (outcome, counters) = try handshakes { $0.connections = 8 }
        XCTAssertEqual(outcome.versions, ["TLSv1.3"])
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 8, "one CertificateVerify signature per handshake")
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "failed"), 0)
    }

    func testTLS13WithWaitFDs() throws {
        let (outcome, counters) = try handshakes { $0.connections = 8; $0.wake = .waitFD }
        XCTAssertEqual(outcome.versions, ["TLSv1.3"])
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 8)
    }

    func testTLS12ECDHERSAWithAsyncCallback() throws {
        let (outcome, counters) = try handshakes {
            $0.maxVersion = TLS1_2_VERSION
            $0.cipherList = "ECDHE-RSA-AES128-GCM-SHA256"
        }
        XCTAssertEqual(outcome.versions, ["TLSv1.2"])
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 8, "one ServerKeyExchange signature per handshake")
    }

    func testTLS12RSAKeyExchangeDecryptsOnThePool() throws {
        let (outcome, counters) = try handshakes {
            $0.maxVersion = TLS1_2_VERSION
            $0.cipherList = "AES128-GCM-SHA256"
        }
        XCTAssertEqual(outcome.versions, ["TLSv1.2"])
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "offloaded"), 8, "one premaster secret decryption per handshake")
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "failed"), 0)
    }

    /// A one-slot queue and one worker busy with 4096-bit signatures: servers
    /// see ASYNC_STATUS_EAGAIN, retry, and all complete.
    func testEagainThroughSSLGetAsyncStatus() throws {
        try engine.set("THREADS", "1")
        try engine.set("QUEUE_DEPTH", "1")
        let (outcome, counters) = try handshakes(rsaBits: 4096) { $0.connections = 16 }
        XCTAssertGreaterThan(outcome.eagainStatuses, 0, "SSL_get_async_status must have reported EAGAIN")
        XCTAssertGreaterThan(delta(counters, "rsa_private_encrypt", "retried"), 0)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 16)
    }
}

/// TLS 1.3 and 1.2 handshakes whose server-side key exchange and signature
/// all run on the pool: keygen, derive, and the certificate's signature.
final class TLSKeyExchangeTests: EngineTestCase {
    enum Certificate: String, CaseIterable { case rsa = "RSA", ecdsa = "ECDSA" }

    let connections = 4

    func identity(_ certificate: Certificate) throws -> TLSIdentity {
        certificate == .rsa ? try TLSIdentity(rsaBits: 2048) : try TLSIdentity(ecGroup: "P-256")
    }

    func run(group: String, certificate: Certificate, version: Int32, ciphers: String? = nil) throws {
        let identity = try identity(certificate)
        var options = TLSHandshakes.Options()
        options.connections = connections
        // TLS 1.2 uses an ECDSA certificate only on a curve the client lists: offer
        // P-256 after the group under test (the peers pick the first).
        options.groups = certificate == .ecdsa && group != "P-256" ? "\(group):P-256" : group
        options.maxVersion = version
        options.cipherList = ciphers
        var outcome = TLSHandshakes.Outcome()
        let label = "\(group) \(certificate.rawValue) \(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2")"
        let counters = try countersDelta {
            do { outcome = try TLSHandshakes.run(identity: identity, options: options) }
            catch { throw HarnessError("\(label): \(error)") }
        }
        XCTAssertEqual(outcome.completed, connections, label)
        XCTAssertEqual(outcome.versions, [version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2"], label)
        let exchange = group == "X25519" ? "x25519" : "ec"
        let derive = group == "X25519" ? "x25519_derive" : "ecdh_derive"
        let signature = certificate == .rsa ? "rsa_private_encrypt" : "ecdsa_sign"
        XCTAssertEqual(delta(counters, "\(exchange)_keygen", "offloaded"), connections, "\(label): server key shares")
        XCTAssertEqual(delta(counters, derive, "offloaded"), connections, "\(label): server secrets")
        XCTAssertEqual(delta(counters, signature, "offloaded"), connections, "\(label): server signatures")
        for algorithm in ["\(exchange)_keygen", derive, signature] {
            XCTAssertEqual(delta(counters, algorithm, "failed"), 0, "\(label) \(algorithm)")
        }
    }

    func testTLS13EveryGroupAndCertificate() throws {
        for group in ["X25519", "P-256", "P-384"] {
            for certificate in Certificate.allCases {
                try run(group: group, certificate: certificate, version: TLS1_3_VERSION)
            }
        }
    }

    func testTLS12ECDHEWithRSAAndECDSA() throws {
        for group in ["X25519", "P-256", "P-384"] {
            try run(group: group, certificate: .rsa, version: TLS1_2_VERSION, ciphers: "ECDHE-RSA-AES128-GCM-SHA256")
            try run(group: group, certificate: .ecdsa, version: TLS1_2_VERSION, ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256")
        }
    }
}
