import COpenSSL
import EngineHarness
import XCTest

/// Every fd the engine leaves in a wait ctx was announced to the application
/// by a pause. HAProxy deletes from its fd table, at close, every fd
/// SSL_get_all_async_fds returns, as fds it was told of; one it never saw
/// crashed it (tlsfuzzer's invalid RSA key exchange: a decryption that fails
/// at once finished on the worker before the job came to pause, so the job
/// never paused and its fresh eventfd stayed in the wait ctx unannounced).
class WaitFDAnnouncementTests: EngineTestCase {
    static let rounds = 1000

    /// Checks `rounds` jobs of `body` in each wake mode: never an unannounced
    /// fd, always `expected`. Returns how many finished without a pause (the
    /// worker won the race, or nothing was offloaded).
    @discardableResult
    func assertEveryFDAnnounced(_ body: @escaping () -> Int32, expected: Int32, rounds: Int = rounds,
                                file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        var withoutPause = 0
        for mode in WakeMode.allCases {
            var unannounced = 0
            for _ in 0..<rounds {
                let outcome = try AnnouncedWaitFDs.run(body, mode: mode)
                XCTAssertEqual(outcome.result, expected, "\(mode)", file: file, line: line)
                if !outcome.unannounced.isEmpty { unannounced += 1 }
                if outcome.pauses == 0 { withoutPause += 1 }
            }
            XCTAssertEqual(unannounced, 0, "\(mode): jobs that left a wait fd no pause had announced, of \(rounds)",
                           file: file, line: line)
        }
        return withoutPause
    }

    /// The modulus itself as a ciphertext: OpenSSL refuses it at once (too large).
    static func modulus(of key: RSAKeyPair) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: key.size)
        BN_bn2binpad(RSA_get0_n(key.softwareKey), &bytes, Int32(bytes.count))
        return bytes
    }

    /// tlsfuzzer's "modulus as encrypted premaster" in-process: the failure
    /// is quick on the worker, so the job often finds it done before pausing.
    func testDecryptionsThatFailAtOnce() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_PADDING, input: Self.modulus(of: key))
        let rsa = key.engineKey
        let counters = try countersDelta {
            try assertEveryFDAnnounced({ operation.perform(on: rsa).result }, expected: -1)
        }
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "offloaded"), 2 * Self.rounds)
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "failed"), 2 * Self.rounds)
    }

    /// Quick successful operations: the same race, won less often.
    func testQuickSignatures() throws {
        let key = try RSAKeyPair(bits: 1024)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let rsa = key.engineKey
        try assertEveryFDAnnounced({ operation.perform(on: rsa).result }, expected: Int32(key.size), rounds: 200)
    }

    /// With pausing blocked the job cannot announce anything: its fd must not stay.
    func testBlockedPauseLeavesNoFD() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let rsa = key.engineKey
        let withoutPause = try assertEveryFDAnnounced({
            ASYNC_block_pause()
            let result = operation.perform(on: rsa).result
            ASYNC_unblock_pause()
            return result
        }, expected: Int32(key.size), rounds: 20)
        XCTAssertEqual(withoutPause, 40, "a blocked job never pauses")
    }

    /// A call that succeeded but left an error behind (pkcs11-provider does,
    /// when a token's sessions are busy) before the job's operation pauses:
    /// the pause must find the queue empty, or SSL_get_error reports
    /// SSL_ERROR_SSL for a paused job and the server drops its connection.
    func testAPauseLeavesNoStrayErrorQueued() throws {
        try engine.set("WORKER_DELAY_USEC", "2000")
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let rsa = key.engineKey
        let notDER: [UInt8] = [0x30, 0x03, 0x02]
        for mode in WakeMode.allCases {
            let outcome = try AnnouncedWaitFDs.run({
                let decoded = notDER.withUnsafeBufferPointer { buffer -> OpaquePointer? in
                    var cursor = buffer.baseAddress
                    return d2i_X509(nil, &cursor, buffer.count)
                }
                guard decoded == nil, ERR_peek_error() != 0 else { return -3 }   // the stray error is there
                return operation.perform(on: rsa).result
            }, mode: mode)
            XCTAssertEqual(outcome.result, Int32(key.size), "\(mode)")
            XCTAssertGreaterThan(outcome.pauses, 0, "\(mode): the operation pauses on a slow worker")
            XCTAssertEqual(outcome.pausesWithErrorsQueued, 0, "\(mode): pauses with an error on the queue")
            ERR_clear_error()
        }
    }

    /// After a job that left no fd, the next operation on the same wait ctx
    /// still pauses and wakes through a fresh, announced fd.
    func testAWaitContextKeepsWorkingAfterAWithdrawnFD() throws {
        try engine.set("WORKER_DELAY_USEC", "2000")
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let rsa = key.engineKey
        let outcome = try AnnouncedWaitFDs.run({
            ASYNC_block_pause()
            let first = operation.perform(on: rsa).result
            ASYNC_unblock_pause()
            let second = operation.perform(on: rsa).result
            return first == second ? second : -2
        }, mode: .waitFD)
        XCTAssertEqual(outcome.result, Int32(key.size))
        XCTAssertGreaterThan(outcome.pauses, 0, "the second operation pauses on a slow worker")
        XCTAssertEqual(outcome.unannounced, [])
    }
}

/// The same through the provider: its steps reach the pool by the same path.
final class ProviderWaitFDAnnouncementTests: ProviderTestCase {
    func testDecryptionsThatFailAtOnce() throws {
        let key = try XCTUnwrap(LoadedProvider.generate("RSA", in: loaded.context))
        defer { EVP_PKEY_free(key) }
        var modulus: OpaquePointer?
        XCTAssertEqual(EVP_PKEY_get_bn_param(key, "n", &modulus), 1)
        var ciphertext = [UInt8](repeating: 0, count: Int(EVP_PKEY_get_size(key)))
        BN_bn2binpad(modulus, &ciphertext, Int32(ciphertext.count))
        BN_free(modulus)
        let decrypter = try XCTUnwrap(EVP_PKEY_CTX_new_from_pkey(loaded.context, key, nil))
        defer { EVP_PKEY_CTX_free(decrypter) }
        XCTAssertEqual(EVP_PKEY_decrypt_init(decrypter), 1)
        let input = ciphertext
        let before = try loaded.stats()
        for mode in WakeMode.allCases {
            var unannounced = 0
            for _ in 0..<WaitFDAnnouncementTests.rounds {
                let outcome = try AnnouncedWaitFDs.run({
                    var plain = [UInt8](repeating: 0, count: input.count)
                    var length = plain.count
                    return EVP_PKEY_decrypt(decrypter, &plain, &length, input, input.count)
                }, mode: mode)
                XCTAssertLessThanOrEqual(outcome.result, 0, "\(mode): the modulus does not decrypt")
                if !outcome.unannounced.isEmpty { unannounced += 1 }
            }
            XCTAssertEqual(unannounced, 0, "\(mode): jobs that left a wait fd no pause had announced")
        }
        ERR_clear_error()
        let after = try loaded.stats()
        XCTAssertEqual(after.count("rsa_private_decrypt", "offloaded") - before.count("rsa_private_decrypt", "offloaded"),
                       2 * WaitFDAnnouncementTests.rounds, "every decryption reached the pool")
    }
}

/// A process at its fd limit: the engine cannot make the job's eventfd, so
/// the operation is computed on the calling thread, as default OpenSSL
/// would, counted, and nothing is left in the wait ctx.
final class WaitFDLimitTests: EngineTestCase {
    func testNoFDForAnEventfdComputesInline() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let rsa = key.engineKey
        let expected = operation.perform(on: key.softwareKey)
        // The pool runs, and a job has switched stacks once (ASan writes its one
        // warning about that to its log, which it opens then), before the limit drops.
        _ = try AnnouncedWaitFDs.run({ operation.perform(on: rsa).result }, mode: .waitFD)
        let before = try engine.stats()
        let box = Box()
        var saved = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved), 0)
        // The lowest free fd number becomes the limit: no new fd can be made.
        let lowestFree = open("/dev/null", O_RDONLY)
        XCTAssertGreaterThanOrEqual(lowestFree, 0)
        close(lowestFree)
        var lowered = saved
        lowered.rlim_cur = rlim_t(lowestFree)
        XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lowered), 0)
        let outcome = Result {
            try AnnouncedWaitFDs.run({
                let (result, output) = operation.perform(on: rsa)
                box.output = output
                return result
            }, mode: .waitFD)
        }
        // Long enough for the publisher to try (every 200 ms) and fail to open its file.
        usleep(500_000)
        XCTAssertEqual(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved), 0)
        let finished = try outcome.get()
        XCTAssertEqual(finished.result, expected.result)
        XCTAssertEqual(box.output, expected.output)
        XCTAssertEqual(finished.pauses, 0, "nothing to wait on: computed here")
        XCTAssertEqual(finished.unannounced, [])
        let after = try engine.stats()
        XCTAssertEqual(after.count("rsa_private_encrypt", "inline") - before.count("rsa_private_encrypt", "inline"), 1)
        XCTAssertEqual(after.count("rsa_private_encrypt", "offloaded") - before.count("rsa_private_encrypt", "offloaded"), 0)
        XCTAssertEqual((after.header["wait_fds_refused"] ?? 0) - (before.header["wait_fds_refused"] ?? 0), 1)
        // What `engine-loader stats` reads catches up once fds are free again, with nothing changing meanwhile.
        let refused = after.header["wait_fds_refused"] ?? 0
        var published = LiveStats.read(pid: getpid()).first?.stats.header["wait_fds_refused"]
        for _ in 0..<40 where published != refused {
            usleep(50_000)
            published = LiveStats.read(pid: getpid()).first?.stats.header["wait_fds_refused"]
        }
        XCTAssertEqual(published, refused, "the publication missed at the limit is made later")
    }
}
