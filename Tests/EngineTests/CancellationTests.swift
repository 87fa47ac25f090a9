import EngineHarness
import XCTest

/// An application frees connections (ASYNC_WAIT_CTX_free, SSL_free) while
/// their jobs are paused with operations on a worker, and their eventfd
/// numbers are reused at once. The check runs in engine-loader, a process of
/// its own: OpenSSL never frees an abandoned job, nor the ENGINE reference a
/// paused TLS job holds. scripts/sanitize.sh runs it under ASan and TSan.
final class CancellationTests: XCTestCase {
    func testFreedConnectionsAreNeverWokenNorTheirReusedFDsWritten() throws {
        let check = try Commands.run([Commands.engineLoader, "check", "--engine", LoadedEngine.defaultPath(), "--only", "cancel"])
        XCTAssertEqual(check.status, 0, check.output)
        let lines = check.output.split(separator: "\n").filter { $0.hasPrefix("ok   cancel:") }
        XCTAssertEqual(lines.count, 5, check.output)
        for mode in WakeMode.allCases {
            for kind in ["ASYNC_WAIT_CTX_free", "SSL_free mid-handshake"] {
                let line = lines.first { $0.contains("\(kind), \(mode.rawValue):") }
                XCTAssertEqual(line.map(String.init)?.contains("4 connections freed with operations in flight, 4 of their fd numbers reused at once, 0 written to, 0 late callbacks, 4 wake-ups withheld"),
                               true, "\(kind), \(mode.rawValue):\n\(check.output)")
            }
        }
    }
}
