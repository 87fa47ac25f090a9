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
