import COpenSSL
import Foundation

/// Where an operation runs relative to OpenSSL's async machinery.
public enum ExecutionMode: String, CaseIterable, Sendable {
    /// A plain call, no ASYNC_JOB: computed inline unless SYNC_OFFLOAD is on.
    case sync
    case waitFD = "wait-fd"
    case callback

    public var wakeMode: WakeMode? {
        switch self {
        case .sync: nil
        case .waitFD: .waitFD
        case .callback: .callback
        }
    }
}

/// The outcome of comparing engine results with default OpenSSL's.
public struct CheckResult: Sendable {
    public init() {}
    /// Engine operations the check ran in its mode (the counters should show them).
    public var operations = 0
    public var compared = 0
    public var mismatches: [String] = []
    public var passed: Bool { mismatches.isEmpty && compared > 0 }
}

/// Runs operations through the engine and compares each with default OpenSSL.
public enum SelfCheck {
    /// Runs one body in `mode`: a plain call, or alone in an ASYNC_JOB.
    public static func inMode(_ mode: ExecutionMode, _ body: @escaping () -> Int32) throws -> Int32 {
        guard let wakeMode = mode.wakeMode else { return body() }
        return try AsyncBatch.run([body], mode: wakeMode).results[0]
    }

    /// Runs bodies in `mode`: one after another, or each in its own job, all at once.
    public static func inMode(_ mode: ExecutionMode, _ bodies: [() -> Int32]) throws -> [Int32] {
        guard let wakeMode = mode.wakeMode else { return bodies.map { $0() } }
        return try AsyncBatch.run(bodies, mode: wakeMode).results
    }

    public static let rsaCases: [(RSAPrivateOperation.Kind, Int32)] =
        RSAPrivateOperation.signPaddings.map { (.encrypt, $0) }
        + RSAPrivateOperation.decryptPaddings.map { (.decrypt, $0) }

    /// Runs `operations` on the engine key in `mode`; returns each (result, output).
    public static func run(_ operations: [RSAPrivateOperation], on key: RSAKeyPair,
                           mode: ExecutionMode) throws -> [(result: Int32, output: [UInt8])] {
        guard let wakeMode = mode.wakeMode else {
            return operations.map { $0.perform(on: key.engineKey) }
        }
        let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
        let outcome = try AsyncBatch.run(bodies, mode: wakeMode)
        return zip(outcome.results, outputs).map { ($0, $1.output) }
    }

    /// `count` fresh PKCS#1 signatures in wait-fd jobs: how many agree byte
    /// for byte with default OpenSSL's (none if the jobs could not run).
    public static func freshSignaturesAgreeing(_ key: RSAKeyPair, count: Int) -> Int {
        let operations = (0..<count).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key) }
        guard let results = try? run(operations, on: key, mode: .waitFD) else { return 0 }
        return zip(operations, results).filter { operation, got in
            let expected = operation.perform(on: key.softwareKey)
            return got.result == expected.result && got.output == expected.output
        }.count
    }

    /// Every padding, `count` random inputs each, on one key size: byte-equal results.
    public static func rsa(key: RSAKeyPair, mode: ExecutionMode, count: Int = 8) throws -> CheckResult {
        var check = CheckResult()
        guard key.engineKeyUsesEngine else {
            check.mismatches.append("RSA \(key.bits): the key does not use the engine")
            return check
        }
        for (kind, padding) in rsaCases {
            let operations = (0..<count).map { _ in RSAPrivateOperation.random(kind, padding: padding, key: key) }
            let engine = try run(operations, on: key, mode: mode)
            check.operations += operations.count
            for (operation, got) in zip(operations, engine) {
                let expected = operation.perform(on: key.softwareKey)
                check.compared += 1
                if got.result != expected.result || got.output != expected.output {
                    check.mismatches.append("RSA \(key.bits) \(operation) \(mode.rawValue): engine returned \(got.result), default OpenSSL \(expected.result)\(OpenSSLErrors.drain())")
                }
            }
        }
        return check
    }
}

/// Where a job's body leaves its output: the job itself returns only an Int32.
public final class OutputBox: @unchecked Sendable {
    public var output: [UInt8] = []
    public init() {}
}
