import COpenSSL
import EngineHarness
import XCTest

/// Every padding and key size, through the engine in each mode, byte-equal
/// with default OpenSSL's software method.
final class RSADifferentialTests: EngineTestCase {
    let operationsPerCase = 6
    var casesPerKey: Int { SelfCheck.rsaCases.count * operationsPerCase }

    func checkAllPaddings(bits: Int, mode: ExecutionMode) throws {
        let key = try RSAKeyPair(bits: bits)
        XCTAssertTrue(key.engineKeyUsesEngine, "key made while the engine is default must use it")
        var check = CheckResult()
        let counters = try countersDelta {
            check = try SelfCheck.rsa(key: key, mode: mode, count: operationsPerCase)
        }
        assertPassed(check)
        let offloaded = delta(counters, "rsa_private_encrypt", "offloaded") + delta(counters, "rsa_private_decrypt", "offloaded")
        let inline = delta(counters, "rsa_private_encrypt", "inline") + delta(counters, "rsa_private_decrypt", "inline")
        if mode == .sync {
            XCTAssertEqual(offloaded, 0, "outside jobs the default is inline")
            XCTAssertEqual(inline, casesPerKey)
        } else {
            XCTAssertEqual(offloaded, casesPerKey, "every operation inside a job goes to the pool")
            XCTAssertEqual(inline, 0)
        }
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "failed") + delta(counters, "rsa_private_decrypt", "failed"), 0)
    }

    func testRSA1024AllModes() throws {
        for mode in ExecutionMode.allCases { try checkAllPaddings(bits: 1024, mode: mode) }
    }

    func testRSA2048AllModes() throws {
        for mode in ExecutionMode.allCases { try checkAllPaddings(bits: 2048, mode: mode) }
    }

    func testRSA3072AllModes() throws {
        for mode in ExecutionMode.allCases { try checkAllPaddings(bits: 3072, mode: mode) }
    }

    func testRSA4096AllModes() throws {
        for mode in ExecutionMode.allCases { try checkAllPaddings(bits: 4096, mode: mode) }
    }
}
