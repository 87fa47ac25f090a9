import COpenSSL
import Foundation

/// Fork safety as servers need it: the engine initialised, operations in
/// flight, then fork. Parent, child and grandchild must each finish what was
/// in flight (where they have it) and then run fresh operations; none may hang.
/// Wait fds only: a callback's pipe would be shared by parent and child.
public enum ForkCheck {
    /// Signs `inFlight` digests in paused jobs, forks, and checks every process.
    public static func run(key: RSAKeyPair, inFlight: Int = 8, timeout: Double = 30) throws -> CheckReport {
        let operations = (0..<inFlight).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key) }
        let expected = operations.map { $0.perform(on: key.softwareKey).output }
        let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
        let running = try AsyncBatch.start(bodies, mode: .waitFD)

        let child = fork()
        guard child >= 0 else { throw HarnessError("fork failed") }
        if child == 0 {
            // The child: what was in flight, then fresh work, then a grandchild.
            let inherited = finishes(running, outputs, expected, timeout: timeout)
            if !inherited { FileHandle.standardError.write(Data("swiftasync fork check: the child did not finish the inherited operations\n".utf8)) }
            var ok = inherited && freshWork(key)
            if ok {
                let grandchild = fork()
                if grandchild == 0 { _exit(freshWork(key) ? 0 : 1) }
                ok = grandchild > 0 && waitForExit(grandchild, timeout: timeout) == 0
            }
            _exit(ok ? 0 : 1)
        }
        var report = CheckReport(section: "fork")
        report.note(finishes(running, outputs, expected, timeout: timeout),
                    "the parent finished the \(inFlight) signatures in flight at the fork, byte-equal")
        report.note(freshWork(key), "the parent signs after the fork")
        let status = waitForExit(child, timeout: timeout * 3)
        report.note(status == 0, "the child finished the signatures in flight at the fork, signed afresh, and so did its own child (exit status \(status))")
        let (forks, failed) = storm(key, forks: 40, timeout: timeout)
        report.note(failed == 0, "a storm of \(forks) forks, each with signatures in flight: \(forks - failed) children and the parent signed correctly")
        return report
    }

    /// Forks in a loop, each time with signatures in flight; every child
    /// finishes them and exits, the parent finishes its own.
    static func storm(_ key: RSAKeyPair, forks: Int, timeout: Double) -> (forks: Int, failed: Int) {
        var failed = 0
        for _ in 0..<forks {
            let operations = (0..<2).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key) }
            let expected = operations.map { $0.perform(on: key.softwareKey).output }
            let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
            guard let running = try? AsyncBatch.start(bodies, mode: .waitFD) else { failed += 1; continue }
            let child = fork()
            if child == 0 { _exit(finishes(running, outputs, expected, timeout: timeout) ? 0 : 1) }
            if !finishes(running, outputs, expected, timeout: timeout) { failed += 1 }
            if child < 0 || waitForExit(child, timeout: timeout) != 0 { failed += 1 }
        }
        return (forks, failed)
    }

    static func finishes(_ running: AsyncBatch, _ outputs: [OutputBox], _ expected: [[UInt8]], timeout: Double) -> Bool {
        let outcome: AsyncBatch.Outcome
        do { outcome = try running.finish(timeout: timeout) } catch {
            FileHandle.standardError.write(Data("pid \(getpid()): \(error); pending \(running.pending.sorted())\n".utf8))
            return false
        }
        return outcome.results.allSatisfy { $0 > 0 } && outputs.map(\.output) == expected
    }

    /// New jobs, after the fork, in this process.
    static func freshWork(_ key: RSAKeyPair) -> Bool {
        SelfCheck.freshSignaturesAgreeing(key, count: 4) == 4
    }

    /// The child's exit status, or -1 if it did not exit in time (it is then killed).
    static func waitForExit(_ pid: pid_t, timeout: Double) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while Date() < deadline {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F) }
            if waited < 0 { return -1 }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
        return -1
    }
}
