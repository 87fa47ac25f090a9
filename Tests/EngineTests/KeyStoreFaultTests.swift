import COpenSSL
import EngineHarness
import XCTest

/// `read` every 20 ms until `done` holds or `seconds` pass: the last reading.
func polled(within seconds: Double, _ read: () throws -> EngineStats,
            until done: (EngineStats) -> Bool) rethrows -> EngineStats {
    let giveUp = Date().addingTimeInterval(seconds)
    var last = try read()
    while !done(last) && Date() < giveUp {
        usleep(20_000)
        last = try read()
    }
    return last
}

/// A token that fails and one that stops answering, through swiftasync in
/// async jobs: each caller gets an error on its queue, within the key
/// store's deadline while the device still hangs; stuck workers are
/// replaced up to the limit; late results are dropped, and the token works
/// again once the device does. The device is SoftHSM behind
/// scripts/slow-pkcs11.c, whose faults the test switches.
final class KeyStoreFaultTests: XCTestCase {
    static let deadlineMilliseconds = 400
    static let threads = 2, spares = 2

    var fixture: KeyStoreTests.Fixture!
    var device: FaultyDevice!
    var through: OpaquePointer!
    var instance: OpaquePointer!
    var key: OpaquePointer!
    var publicKey: OpaquePointer!
    private var file = ""

    override func setUpWithError() throws {
        ERR_clear_error()
        do {
            fixture = try KeyStoreTests.made.get()
            device = try FaultyDevice.shared()
        } catch { throw XCTSkip("no token here: \(error)") }
        device.set(.none)
        file = NSTemporaryDirectory() + "swiftasync-faults-\(getpid())-\(UUID().uuidString).cnf"
        through = try SoftHSMToken.context(
            fixture.token.throughConfiguration(
                swiftasync: LoadedEngine.defaultPath(), file: file,
                storeSettings: [("THREADS", "\(Self.threads)"), ("DEADLINE_MSEC", "\(Self.deadlineMilliseconds)"),
                                ("SPARE_THREADS", "\(Self.spares)")],
                tokenModule: device.module),
            file: file)
        instance = try XCTUnwrap(OSSL_PROVIDER_load(through, "swiftasync-pkcs11"))
        key = try XCTUnwrap(PrivateKeys.load(uri: SoftHSMToken.uri("rsa"), in: through), "the token's key")
        XCTAssertEqual(KeyStoreTests.providerName(key), "swiftasync-pkcs11")
        publicKey = fixture.keys["rsa"]
    }

    override func tearDown() {
        device?.set(.none)
        if let key { EVP_PKEY_free(key) }
        if let instance { OSSL_PROVIDER_unload(instance) }
        if let through { OSSL_LIB_CTX_free(through) }
        try? FileManager.default.removeItem(atPath: file)
        ERR_clear_error()
    }

    /// COUNT bodies, each signing with the token's key through swiftasync and verifying
    /// with default's copy (SIGN returns nil when signing failed, else whether it verified):
    /// 1 signed and verified, 2 failed with the deadline's error, 3 failed with another
    /// error on the queue, 0 failed without one.
    func attempts(_ count: Int,
                  _ sign: @escaping (_ key: OpaquePointer, _ through: OpaquePointer, _ publicKey: OpaquePointer,
                                     _ plain: OpaquePointer) -> Bool?) -> [() -> Int32] {
        (0..<count).map { _ in { [key, publicKey, through, plain = fixture.plain] in
            switch sign(key!, through!, publicKey!, plain) {
            case true?: return 1
            case false?: return -2
            case nil: return Self.lastErrorMentions("deadline") ? 2 : (ERR_peek_error() != 0 ? 3 : 0)
            }
        } }
    }

    /// One signature per body, each in a fresh context freed at once after the call
    /// (as a server frees a failed connection's).
    func signatures(_ count: Int) -> [() -> Int32] {
        attempts(count) { key, through, publicKey, plain in
            let digest = randomBytes(32)
            let signer = ProviderTests.signer(key, in: through, padding: RSA_PKCS1_PADDING)
            defer { EVP_PKEY_CTX_free(signer) }
            let (result, signature) = ProviderTests.sign(signer, digest)
            guard result == 1 else { return nil }
            return ProviderTests.verify(publicKey, in: plain, padding: RSA_PKCS1_PADDING, signature, digest)
        }
    }

    /// The same as digest-signatures of a message: init, update and final each a call on the token's workers.
    func digestSignatures(_ count: Int) -> [() -> Int32] {
        attempts(count) { key, through, publicKey, plain in
            let message = randomBytes(100)
            let (result, signature) = KeyStoreTests.digestSign(key, in: through, padding: RSA_PKCS1_PADDING, message)
            guard result == 1 else { return nil }
            return KeyStoreTests.digestVerify(publicKey, in: plain, padding: RSA_PKCS1_PADDING, signature, message)
        }
    }

    /// Whether the error queue's newest entry (its reason or data) mentions WORD.
    static func lastErrorMentions(_ word: String) -> Bool {
        var data: UnsafePointer<CChar>?
        var flags: Int32 = 0
        let code = ERR_peek_last_error_data(&data, &flags)
        guard code != 0 else { return false }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        let reason = String(cString: text) + " " + (data.map { String(cString: $0) } ?? "")
        return reason.contains(word)
    }

    func stats() throws -> EngineStats { try LoadedProvider.stats(of: instance) }

    func pool(_ stats: EngineStats, _ field: String) -> Int {
        stats.algorithms[KeyStoreTests.store + "pool"]?[field] ?? -1
    }

    /// Polls until `done` holds (bounded): the workers hand back on their own time.
    func eventually(_ what: String, within seconds: Double = 20, _ done: (EngineStats) -> Bool) throws {
        let last = try polled(within: seconds, stats, until: done)
        XCTAssertTrue(done(last), "\(what): \(last.algorithms[KeyStoreTests.store + "pool"] ?? [:])")
    }

    /// CKR_DEVICE_ERROR reaches every caller's queue (jobs in both wake modes, plain
    /// calls), counted as failed on the token's workers; the next signature works.
    func testDeviceErrorReachesTheCaller() throws {
        XCTAssertEqual(try AsyncBatch.run(signatures(2), mode: .waitFD).results, [1, 1], "before the fault")
        let signature = KeyStoreTests.store + "rsa_private_encrypt"
        let before = try stats()
        device.set(.fail)
        for mode in WakeMode.allCases {
            XCTAssertEqual(try AsyncBatch.run(signatures(3), mode: mode, timeout: 30).results, [3, 3, 3],
                           "\(mode): each failed with an error on its queue")
        }
        XCTAssertEqual(signatures(1)[0](), 3, "plain call: an error on the queue")
        let after = try stats()
        XCTAssertEqual(after.count(signature, "failed") - before.count(signature, "failed"), 7)
        XCTAssertEqual(after.count(signature, "offloaded") - before.count(signature, "offloaded"), 6)
        XCTAssertEqual(pool(after, "deadlines_missed"), pool(before, "deadlines_missed"), "no deadline involved")
        device.set(.none)
        XCTAssertEqual(try AsyncBatch.run(signatures(2), mode: .callback).results, [1, 1], "the token works again")
    }

    /// A device that stops answering: every caller's wait ends at the deadline with an
    /// error while the device still hangs; the stuck workers are replaced up to
    /// SPARE_THREADS; once the device answers, the late results are dropped, the spares
    /// go, nothing is left in flight, and signatures work again.
    func testHangingDeviceMissesTheDeadlineAndRecovers() throws {
        XCTAssertEqual(try AsyncBatch.run(signatures(2), mode: .waitFD).results, [1, 1], "before the fault")
        let before = try stats()
        let fds = openFDs()
        device.set(.hang)
        let first = try AsyncBatch.run(signatures(4), mode: .waitFD, timeout: 30).results
        XCTAssertEqual(first, [2, 2, 2, 2], "each wait ended by the deadline, the device still hanging")
        // The two calls begun are stuck: a spare for each; a spare may take a queued one
        // before its deadline passes, and be stuck in it too.
        try eventually("two workers stuck, two spares started") {
            pool($0, "workers_replaced") - pool(before, "workers_replaced") == Self.spares
                && pool($0, "spare_threads_running") == Self.spares
                && (Self.threads...(Self.threads + Self.spares)).contains(pool($0, "in_flight"))
        }
        // The spares take the next ones and hang too; then no more spares: queued callers still get their error.
        let second = try AsyncBatch.run(signatures(3), mode: .callback, timeout: 30).results
        XCTAssertEqual(second, [2, 2, 2], "callback mode, spares stuck as well")
        let stuck = try stats()
        XCTAssertEqual(pool(stuck, "deadlines_missed") - pool(before, "deadlines_missed"), 7)
        XCTAssertEqual(pool(stuck, "spare_threads_running"), Self.spares, "no more than SPARE_THREADS")
        XCTAssertEqual(pool(stuck, "workers_replaced") - pool(before, "workers_replaced"), Self.spares)
        XCTAssertEqual(pool(stuck, "busy_threads"), Self.threads + Self.spares, "every worker in a device call")

        device.set(.none)
        try eventually("the stuck calls returned, their results dropped, the spares gone") {
            pool($0, "in_flight") == 0 && pool($0, "spare_threads_running") == 0 && pool($0, "busy_threads") == 0
                && pool($0, "late_results") - pool(before, "late_results") == Self.threads + Self.spares
        }
        XCTAssertEqual(try AsyncBatch.run(signatures(4), mode: .waitFD).results, [1, 1, 1, 1], "the token works again")
        XCTAssertEqual(openFDs(), fds, "no fd left behind")
    }

    /// Digest-signatures (init, update and final each a call on the token's workers) cut off
    /// at any step: the device's operation is ended for them, so their sessions go back usable
    /// (pkcs11-provider would otherwise hand back a session with its operation open, and
    /// every later C_SignInit on it fails with CKR_OPERATION_ACTIVE).
    func testDigestSignaturesCutOffLeaveNoOperationOpen() throws {
        XCTAssertEqual(try AsyncBatch.run(digestSignatures(2), mode: .waitFD).results, [1, 1])
        device.set(.hang)
        XCTAssertEqual(try AsyncBatch.run(digestSignatures(6), mode: .waitFD, timeout: 30).results,
                       Array(repeating: 2, count: 6), "each cut off by the deadline")
        device.set(.none)
        try eventually("the stuck calls returned") { pool($0, "in_flight") == 0 && pool($0, "spare_threads_running") == 0 }
        for mode in WakeMode.allCases {
            XCTAssertEqual(try AsyncBatch.run(digestSignatures(24), mode: mode).results, Array(repeating: 1, count: 24),
                           "\(mode): every session usable again")
        }
    }

    /// Outside jobs the call is the caller's own (inline, as without swiftasync): no
    /// deadline applies there, so the plain call waits for the device.
    func testPlainCallsAreNotCut() throws {
        device.set(.hang)
        nonisolated(unsafe) let body = signatures(1)[0]
        let returned = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = body()
            returned.signal()
        }
        XCTAssertEqual(returned.wait(timeout: .now() + .milliseconds(Self.deadlineMilliseconds * 2)), .timedOut,
                       "still in the device's call past the deadline")
        device.set(.none)
        XCTAssertEqual(returned.wait(timeout: .now() + 20), .success, "returned once the device answered")
    }

    func openFDs() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }
}

/// The token as a network HSM is: SoftHSM behind `p11-kit server`, reached
/// through p11-kit's client module, every call a round trip. The server is
/// killed and started again while keys are loaded: through swiftasync each
/// caller in a job gets an error on its queue, nothing hangs or crashes, and
/// after the restart swiftasync does what pkcs11-provider alone does in the
/// same process (pkcs11-provider 1.0 with p11-kit 0.24 does not reconnect:
/// both keep failing until the application loads the provider again).
final class KeyStoreTokenGoneTests: XCTestCase {
    static let directory = NSTemporaryDirectory() + "swiftasync-p11kit-\(getpid())"
    static let socket = directory + "/socket"

    static func clientModule() -> String? {
        let lib = "/usr/lib"
        let arches = (try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []
        return arches.map { "\(lib)/\($0)/pkcs11/p11-kit-client.so" }.first { FileManager.default.fileExists(atPath: $0) }
    }

    func startServer() throws -> Process {
        try? FileManager.default.removeItem(atPath: Self.socket)
        let server = try Commands.launch(["p11-kit", "server", "-f", "-n", Self.socket, "--provider",
                                          SoftHSMToken.tokenModule, "pkcs11:token=\(SoftHSMToken.label)"])
        for _ in 0..<400 where !FileManager.default.fileExists(atPath: Self.socket) && server.isRunning { usleep(25_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.socket), "p11-kit server listening")
        return server
    }

    /// The server and the p11-kit-remote it runs per client connection.
    func stop(_ server: Process) {
        _ = try? Commands.run(["pkill", "-TERM", "-P", String(server.processIdentifier)])
        server.terminate()
        server.waitUntilExit()
    }

    func testTokenGoneAndBack() throws {
        let fixture: KeyStoreTests.Fixture
        do { fixture = try KeyStoreTests.made.get() } catch { throw XCTSkip("no token here: \(error)") }
        guard let client = Self.clientModule() else { throw XCTSkip("no p11-kit-client.so") }
        // Not ours: loading a key through p11-kit 0.24.1's client, pkcs11-provider 1.0 alone
        // (no swiftasync) has it copy 560 bytes past a buffer pkcs11-provider allocated.
        guard EngineTestCase.sanitizer != "address" else {
            throw XCTSkip("ASan: p11-kit-client reads past pkcs11-provider's buffer at key load, without swiftasync")
        }
        // A server ignores SIGPIPE; the client module writes to a socket whose server died.
        signal(SIGPIPE, SIG_IGN)
        try FileManager.default.createDirectory(atPath: Self.directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: Self.directory) }
        setenv("P11_KIT_SERVER_ADDRESS", "unix:path=\(Self.socket)", 1)
        var server = try startServer()
        defer { stop(server) }

        let files = ["alone", "through"].map { Self.directory + "/\($0).cnf" }
        let alone = try SoftHSMToken.context(
            fixture.token.aloneConfiguration(tokenModule: client), file: files[0])
        let through = try SoftHSMToken.context(
            fixture.token.throughConfiguration(swiftasync: LoadedEngine.defaultPath(), file: files[1], tokenModule: client),
            file: files[1])
        let instance = try XCTUnwrap(OSSL_PROVIDER_load(through, "swiftasync-pkcs11"))
        defer { OSSL_PROVIDER_unload(instance); OSSL_LIB_CTX_free(through); OSSL_LIB_CTX_free(alone) }
        let uri = SoftHSMToken.uri("rsa")
        let aloneKey = try XCTUnwrap(PrivateKeys.load(uri: uri, in: alone), "the key, pkcs11-provider alone")
        let key = try XCTUnwrap(PrivateKeys.load(uri: uri, in: through), "the key through swiftasync")
        defer { EVP_PKEY_free(aloneKey); EVP_PKEY_free(key) }
        let publicKey = try XCTUnwrap(fixture.keys["rsa"])
        let message = randomBytes(100)

        /// 1 signed and verified, 3 failed with an error on the queue, 0 failed without one.
        func digestSign(_ key: OpaquePointer, in context: OpaquePointer) -> Int32 {
            let (result, signature) = KeyStoreTests.digestSign(key, in: context, padding: RSA_PKCS1_PADDING, message)
            if result == 1 {
                return KeyStoreTests.digestVerify(publicKey, in: fixture.plain, padding: RSA_PKCS1_PADDING, signature, message) ? 1 : -2
            }
            return ERR_peek_error() != 0 ? 3 : 0
        }
        func inJobs(_ mode: WakeMode) throws -> [Int32] {
            try AsyncBatch.run((0..<3).map { _ in { digestSign(key, in: through) } }, mode: mode, timeout: 60).results
        }
        let start = try LoadedProvider.stats(of: instance)
        XCTAssertEqual(digestSign(aloneKey, in: alone), 1, "pkcs11-provider alone, the server up")
        XCTAssertEqual(try inJobs(.waitFD), [1, 1, 1], "through swiftasync, the server up")

        stop(server)
        XCTAssertEqual(digestSign(aloneKey, in: alone), 3, "pkcs11-provider alone, the server gone")
        for mode in WakeMode.allCases {
            XCTAssertEqual(try inJobs(mode), [3, 3, 3], "\(mode): each caller's error on its queue, the server gone")
        }

        server = try startServer()
        let aloneAfter = digestSign(aloneKey, in: alone)
        print("token gone and back: pkcs11-provider alone after the restart: \(aloneAfter == 1 ? "signs" : "fails (\(aloneAfter))")")
        XCTAssertEqual(try inJobs(.callback), [aloneAfter, aloneAfter, aloneAfter],
                       "after the restart as pkcs11-provider alone (\(aloneAfter))")
        // A worker counts as in flight until it has told every owner: the last job may resume first.
        let end = try polled(within: 2, { try LoadedProvider.stats(of: instance) }) {
            $0.algorithms[KeyStoreTests.store + "pool"]?["in_flight"] == 0
        }
        let steps = KeyStoreTests.store + "sign_step"
        XCTAssertGreaterThan(end.count(steps, "offloaded") - start.count(steps, "offloaded"), 0, "its calls ran on the token's workers")
        XCTAssertEqual(end.algorithms[KeyStoreTests.store + "pool"]?["in_flight"], 0)
        XCTAssertEqual(end.algorithms[KeyStoreTests.store + "pool"]?["deadlines_missed"],
                       start.algorithms[KeyStoreTests.store + "pool"]?["deadlines_missed"], "errors, not timeouts")
    }
}
