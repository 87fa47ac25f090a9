import COpenSSL
import EngineHarness
import XCTest

/// Inputs default OpenSSL rejects are rejected the same way, with the same
/// errors on the caller's error queue, whether computed inline or on a worker.
final class BadInputTests: EngineTestCase {
    struct Rejection: Equatable, CustomStringConvertible {
        var result: Int32
        var errors: [String]
        var description: String { "\(result) \(errors)" }
    }

    func rejection(_ body: () -> Int32) -> Rejection {
        ERR_clear_error()
        let result = body()
        return Rejection(result: result, errors: OpenSSLErrors.codes().map { "lib \($0.library) reason \($0.reason)" })
    }

    /// The same operation on the software key, then on the engine key in a job and outside.
    func assertRejectedLikeSoftware(_ operation: RSAPrivateOperation, key: RSAKeyPair,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = rejection { operation.perform(on: key.softwareKey).result }
        XCTAssertEqual(expected.result, -1, "default OpenSSL must reject \(operation)", file: file, line: line)
        XCTAssertFalse(expected.errors.isEmpty, file: file, line: line)

        let inline = rejection { operation.perform(on: key.engineKey).result }
        XCTAssertEqual(inline, expected, "inline: \(operation)", file: file, line: line)

        for mode in WakeMode.allCases {
            let rsa = key.engineKey
            let errors = Box()
            let outcome = try AsyncBatch.run([{
                ERR_clear_error()
                let result = operation.perform(on: rsa).result
                // Read the queue inside the job: it is the caller's thread's queue.
                errors.text = OpenSSLErrors.codes().map { "lib \($0.library) reason \($0.reason)" }
                return result
            }], mode: mode)
            XCTAssertEqual(Rejection(result: outcome.results[0], errors: errors.text), expected,
                           "\(mode.rawValue): \(operation)", file: file, line: line)
        }
    }

    func testInputNotBelowModulus() throws {
        let key = try RSAKeyPair(bits: 2048)
        let tooBig = [UInt8](repeating: 0xFF, count: key.size)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .encrypt, padding: RSA_NO_PADDING, input: tooBig), key: key)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .decrypt, padding: RSA_NO_PADDING, input: tooBig), key: key)
    }

    func testWrongInputLengths() throws {
        let key = try RSAKeyPair(bits: 2048)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .encrypt, padding: RSA_NO_PADDING, input: randomBytes(key.size - 1)), key: key)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .encrypt, padding: RSA_PKCS1_PADDING, input: randomBytes(key.size)), key: key)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_PADDING, input: randomBytes(key.size + 1)), key: key)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_OAEP_PADDING, input: []), key: key)
    }

    func testUnsupportedPadding() throws {
        let key = try RSAKeyPair(bits: 2048)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .encrypt, padding: 99, input: randomBytes(32)), key: key)
        try assertRejectedLikeSoftware(RSAPrivateOperation(kind: .decrypt, padding: RSA_X931_PADDING, input: randomBytes(key.size)), key: key)
    }

    /// A padding check that fails on the worker comes back as an error, and is counted.
    func testCorruptCiphertextFailsOnTheWorker() throws {
        let key = try RSAKeyPair(bits: 2048)
        var corrupt = RSAPrivateOperation.random(.decrypt, padding: RSA_PKCS1_OAEP_PADDING, key: key).input
        corrupt[corrupt.count / 2] ^= 0x55
        let operation = RSAPrivateOperation(kind: .decrypt, padding: RSA_PKCS1_OAEP_PADDING, input: corrupt)
        let counters = try countersDelta { try assertRejectedLikeSoftware(operation, key: key) }
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "failed"), 3, "inline, wait-fd and callback attempts")
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "offloaded"), 2)
    }
}
