import COpenSSL
import EngineHarness
import XCTest

/// Each test loads swiftasync through OpenSSL's dynamic engine, makes it the
/// default, and closes it again, so that every test starts from a clean engine.
class EngineTestCase: XCTestCase {
    var engine: LoadedEngine!

    /// The sanitizer the engine and tests were built with (scripts/sanitize.sh), if any.
    static let sanitizer = ProcessInfo.processInfo.environment["SWIFTASYNC_SANITIZER"]

    /// Ctrl commands for this test class's engine.
    var engineSettings: [(String, String)] { [] }

    /// CALLER_RUNS_DEPTH, set before `engineSettings`; nil: the default. The tests of the
    /// offload path count every operation inside a job at the pool, however deep their
    /// queues: by default a saturated pool has callers compute some themselves.
    var callerRunsDepth: String? { "0" }

    override func setUpWithError() throws {
        ERR_clear_error()
        engine = try LoadedEngine(settings: (callerRunsDepth.map { [("CALLER_RUNS_DEPTH", $0)] } ?? []) + engineSettings)
    }

    override func tearDown() {
        engine?.close()
        engine = nil
        ERR_clear_error()
    }

    /// The change in the engine's counters across `body`.
    func countersDelta(_ body: () throws -> Void) throws -> (before: EngineStats, after: EngineStats) {
        let before = try engine.stats()
        try body()
        return (before, try engine.stats())
    }

    func delta(_ pair: (before: EngineStats, after: EngineStats), _ algorithm: String, _ counter: String) -> Int {
        pair.after.count(algorithm, counter) - pair.before.count(algorithm, counter)
    }

    func assertPassed(_ check: CheckResult, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThan(check.compared, 0, "nothing was compared", file: file, line: line)
        XCTAssertEqual(check.mismatches, [], file: file, line: line)
    }
}

/// Each test loads swiftasync as a provider in a library context of its own
/// (LoadedProvider) and closes it again.
class ProviderTestCase: XCTestCase {
    var loaded: LoadedProvider!

    /// Lines of the provider's cnf section for this test class.
    var providerSettings: [(String, String)] { [] }

    override func setUpWithError() throws {
        ERR_clear_error()
        loaded = try LoadedProvider(settings: providerSettings)
    }

    override func tearDown() {
        loaded?.close()
        loaded = nil
        ERR_clear_error()
    }
}
