import COpenSSL
import EngineHarness
import XCTest

/// The 8-lane path (LaneCheck): every result agrees with default OpenSSL's,
/// and the counters show how many operations ran in how many 8-lane calls.
/// On a build or CPU without lanes the same cases must agree with none in lanes.
final class MultiBufferTests: EngineTestCase {
    override var engineSettings: [(String, String)] { LaneCheck.settings }

    func check(_ section: (LoadedEngine, inout CheckReport) throws -> Void,
               file: StaticString = #filePath, line: UInt = #line) throws {
        var report = CheckReport(section: "lanes")
        try section(engine, &report)
        XCTAssertFalse(report.lines.isEmpty, file: file, line: line)
        // Failing lines first: a CI summary keeps only a message's first line.
        let failing = report.lines.filter { $0.hasPrefix("FAIL") }
        XCTAssertEqual(report.failures, 0, (failing + report.lines).joined(separator: "\n"), file: file, line: line)
    }

    func testEveryFillFromOneToEight() throws { try check(LaneCheck.everyFill) }
    func testEveryPaddingAndKeySize() throws { try check(LaneCheck.everyPaddingAndSize) }
    func testEightDifferentKeysInOneCall() throws { try check(LaneCheck.eightKeys) }
    func testX25519DerivesAndALowOrderPeer() throws { try check(LaneCheck.x25519Lanes) }
    func testBadInputsFailOnlyTheirOwnLane() throws { try check(LaneCheck.invalidInputs) }
    func testMixedKindsQueuedTogether() throws { try check(LaneCheck.mixedKinds) }
    func testECKeygenECDHAndECDSAOnTheNISTCurves() throws { try check(LaneCheck.ecLanes) }
    func testOneDigestSignedTwiceGetsDifferentNonces() throws { try check(LaneCheck.ecdsaNoncesDiffer) }

    /// The build says whether it has lanes; a CPU with AVX-512 IFMA runs them.
    func testStatusSaysWhetherLanesRun() throws {
        let status = try engine.stats().multibuffer
        let cpuHasIFMA = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").contains(" avx512ifma")
        let built = ProcessInfo.processInfo.environment["SWIFTASYNC_CRYPTO_MB"].map { !$0.isEmpty } ?? false
        switch (built, cpuHasIFMA) {
        case (false, _): XCTAssertEqual(status, "not_built")
        case (true, false): XCTAssertEqual(status, "cpu_lacks_avx512_ifma")
        case (true, true): XCTAssertEqual(status, "in_use")
        }
        try engine.set("MULTIBUFFER", "0")
        XCTAssertEqual(try engine.stats().multibuffer, built && cpuHasIFMA ? "off_by_ctrl" : status)
    }
}

/// With MULTIBUFFER=0 no operation runs in lanes, whatever is queued.
final class MultiBufferOffTests: EngineTestCase {
    override var engineSettings: [(String, String)] { LaneCheck.settings + [("MULTIBUFFER", "0")] }

    func testNothingRunsInLanes() throws {
        var report = CheckReport(section: "lanes off")
        try LaneCheck.mixedKinds(engine, &report)
        XCTAssertEqual(report.failures, 0, report.lines.joined(separator: "\n"))
        XCTAssertTrue(report.lines.allSatisfy { $0.contains("0 in 8-lane calls") }, report.lines.joined(separator: "\n"))
    }
}

/// With the measured crossovers: a lone operation is never put in lanes (its
/// latency stays scalar), and a deep queue is.
final class MultiBufferCrossoverTests: EngineTestCase {
    func testALoneSignatureStaysScalar() throws {
        let key = try RSAKeyPair(bits: 2048)
        let counters = try countersDelta {
            for _ in 0..<4 { XCTAssertEqual(SelfCheck.freshSignaturesAgreeing(key, count: 1), 1) }
        }
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 4)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "lane_calls"), 0)
    }

    func testADeepQueueFillsLanes() throws {
        try engine.set("THREADS", "1")
        let key = try RSAKeyPair(bits: 2048)
        let counters = try countersDelta {
            XCTAssertEqual(SelfCheck.freshSignaturesAgreeing(key, count: 64), 64)
        }
        let calls = delta(counters, "rsa_private_encrypt", "lane_calls")
        if try engine.stats().multibuffer == "in_use" {
            XCTAssertGreaterThan(calls, 0)
            XCTAssertGreaterThanOrEqual(delta(counters, "rsa_private_encrypt", "lanes"), calls * 5,
                                        "no call below the RSA-2048 crossover of 5")
        } else {
            XCTAssertEqual(calls, 0)
        }
    }
}

/// The full-queue tests again with a slow worker that takes what is queued
/// in 8-lane calls of two or more: EAGAIN retries, every operation offloaded
/// once and correct, and lanes used.
final class MultiBufferQueueFullTests: QueueFullTests {
    override var queueDepth: Int { 3 }
    override var engineSettings: [(String, String)] {
        super.engineSettings + [("WORKER_DELAY_USEC", "300"), ("MULTIBUFFER_MIN_FILL", "2")]
    }

    func testFullQueueFillsLanes() throws {
        for mode in WakeMode.allCases {
            let (_, retried) = try runFullQueue(mode: mode)
            XCTAssertGreaterThan(retried, 0, "\(mode)")
            let calls = lastCounters.map { delta($0, "rsa_private_encrypt", "lane_calls") } ?? -1
            if try engine.stats().multibuffer == "in_use" {
                XCTAssertGreaterThan(calls, 0, "\(mode)")
            } else {
                XCTAssertEqual(calls, 0, "\(mode)")
            }
        }
    }
}
