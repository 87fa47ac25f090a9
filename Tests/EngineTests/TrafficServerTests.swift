import EngineHarness
import Foundation
import XCTest

/// Apache Traffic Server (Debian's trafficserver) with async handshakes
/// (`proxy.config.ssl.async.handshake.enabled`), the engine loaded through its
/// own `proxy.config.ssl.engine.conf_file`: the handshakes of ServerTests (TLS
/// 1.3 and 1.2, RSA and ECDSA certificates, X25519 and P-256), each one's
/// signature, key share and secret counted as offloaded, which only happens
/// inside an async job. scripts/trafficserver.sh writes its configuration.
class TrafficServerTests: ServerTests {
    override var serverName: String { "traffic_server" }

    /// How Traffic Server gets swiftasync: the ENGINE file it loads itself (or "-"), and its environment.
    func swiftasync() throws -> (engineConf: String, environment: [String: String]) {
        (try Commands.writeRepositoryConf("openssl.cnf", to: "\(directory)/openssl.cnf", modulePath: enginePath), [:])
    }

    override func startServer(certificate: String, extra: [String]) throws -> (Process, Int) {
        let port = try freeLoopbackPort()
        let groups = extra.firstIndex(of: "-groups").map { extra[$0 + 1] } ?? ""
        let (engineConf, environment) = try swiftasync()
        let root = "\(directory)/trafficserver-\(port)"
        let server = try Commands.launch([Commands.repositoryRoot + "/scripts/trafficserver.sh", root, String(port),
                                          "\(directory)/\(certificate).crt", keyArgument(certificate), engineConf, groups],
                                         environment: environment)
        XCTAssertTrue(listens(server, on: port), "Traffic Server is not listening on \(port):\n"
                      + ((try? String(contentsOfFile: "\(root)/log/diags.log", encoding: .utf8)) ?? ""))
        return (server, port)
    }

    // Named here so that test discovery on Linux, which lists a class's own methods, runs them again.
    override func testTLS12ECDHERSA() throws { try super.testTLS12ECDHERSA() }
    override func testTLS13P256WithRSACertificate() throws { try super.testTLS13P256WithRSACertificate() }
    override func testTLS13X25519WithECDSACertificate() throws { try super.testTLS13X25519WithECDSACertificate() }
    override func testTLS12ECDHEECDSAOnP256() throws { try super.testTLS12ECDHEECDSAOnP256() }
}

/// The same with swiftasync as Traffic Server's provider, through OPENSSL_CONF
/// (openssl-provider.cnf), and no ENGINE file.
final class ProviderTrafficServerTests: TrafficServerTests {
    override func swiftasync() throws -> (engineConf: String, environment: [String: String]) {
        ("-", ["OPENSSL_CONF": try Commands.writeRepositoryConf("openssl-provider.cnf", to: "\(directory)/openssl-provider.cnf",
                                                                 modulePath: enginePath)])
    }

    override func testTLS12ECDHERSA() throws { try super.testTLS12ECDHERSA() }
    override func testTLS13P256WithRSACertificate() throws { try super.testTLS13P256WithRSACertificate() }
    override func testTLS13X25519WithECDSACertificate() throws { try super.testTLS13X25519WithECDSACertificate() }
    override func testTLS12ECDHEECDSAOnP256() throws { try super.testTLS12ECDHEECDSAOnP256() }
}
