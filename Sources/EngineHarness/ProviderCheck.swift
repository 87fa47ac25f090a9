import COpenSSL

/// `engine-loader check --provider`: every private-key step of the provider,
/// in a plain call and in async jobs woken by wait fds and by callbacks,
/// compared with the default provider alone (byte-equal where deterministic,
/// verified where not); the provider's own counters must show each step
/// where it should have run (offloaded in jobs, and in 8-lane calls where
/// the build and the CPU run them: the check's provider runs lanes for any fill).
public enum ProviderCheck {
    enum Route: String, CaseIterable { case plain = "plain call", waitFD = "wait-fd jobs", callback = "callback jobs" }

    /// One kind of step: its counter, whether it runs in lanes, and a body per call that says if its result agreed.
    struct Step {
        let label: String
        let counter: String
        let laned: Bool
        let make: () throws -> (body: () -> Int32, agreed: () -> Bool)
    }

    public static func run(provider: LoadedProvider, count: Int = 8) throws -> CheckReport {
        var report = CheckReport(section: "provider")
        let lanesRun = try provider.stats().multibuffer == "in_use"
        for step in try steps(provider) {
            for route in Route.allCases {
                let calls = try (0..<count).map { _ in try step.make() }
                let before = try provider.stats()
                let results: [Int32]
                switch route {
                case .plain: results = calls.map { $0.body() }
                case .waitFD: results = try AsyncBatch.run(calls.map(\.body), mode: .waitFD).results
                case .callback: results = try AsyncBatch.run(calls.map(\.body), mode: .callback).results
                }
                let after = try provider.stats()
                let agreed = zip(results, calls).filter { $0 == 1 && $1.agreed() }.count
                let offloaded = after.count(step.counter, "offloaded") - before.count(step.counter, "offloaded")
                let lanes = after.count(step.counter, "lanes") - before.count(step.counter, "lanes")
                let routedRight = route == .plain ? offloaded == 0
                    : offloaded == count && (!step.laned || !lanesRun || lanes == count)
                report.note(agreed == count && routedRight,
                            "\(step.label), \(route.rawValue): \(agreed)/\(count) agree with the default provider; offloaded \(offloaded), in lanes \(lanes)")
            }
        }
        return report
    }

    static func steps(_ provider: LoadedProvider) throws -> [Step] {
        let context = provider.context, plain = provider.plain
        func key(_ type: String, group: String? = nil, bits: Int32 = 2048) throws -> (ours: OpaquePointer, plain: OpaquePointer) {
            guard let ours = LoadedProvider.generate(type, in: context, bits: bits, group: group),
                  let copy = LoadedProvider.copy(ours, to: plain) else { throw HarnessError("a \(type) key") }
            return (ours, copy)
        }
        var steps: [Step] = []
        for bits: Int32 in [2048, 3072, 4096] {
            let rsa = try key("RSA", bits: bits)
            steps.append(Step(label: "RSA-\(bits) PKCS#1 v1.5 sign", counter: "rsa_private_encrypt", laned: true) {
                let digest = randomBytes(32)
                let box = OutputBox()
                return ({ let (result, bytes) = sign(rsa.ours, in: context, digest, padding: RSA_PKCS1_PADDING); box.output = bytes; return result },
                        { box.output == sign(rsa.plain, in: plain, digest, padding: RSA_PKCS1_PADDING).1 })
            })
        }
        let rsa = try key("RSA")
        steps.append(Step(label: "RSA-2048 PSS digest-sign", counter: "rsa_private_encrypt", laned: true) {
            let message = randomBytes(200)
            let box = OutputBox()
            return ({ let (result, bytes) = digestSign(rsa.ours, in: context, message); box.output = bytes; return result },
                    { digestVerify(rsa.plain, in: plain, box.output, message) })
        })
        steps.append(Step(label: "RSA-2048 OAEP decrypt", counter: "rsa_private_decrypt", laned: false) {
            let message = randomBytes(40)
            let ciphertext = encrypt(rsa.plain, in: plain, message)
            let box = OutputBox()
            return ({ let (result, bytes) = decrypt(rsa.ours, in: context, ciphertext); box.output = bytes; return result },
                    { box.output == message })
        })
        for group in ["P-256", "P-384", "P-521"] {
            let ec = try key("EC", group: group)
            steps.append(Step(label: "ECDSA \(group) sign", counter: "ecdsa_sign", laned: true) {
                let digest = randomBytes(32)
                let box = OutputBox()
                return ({ let (result, bytes) = sign(ec.ours, in: context, digest); box.output = bytes; return result },
                        { verify(ec.plain, in: plain, box.output, digest) })
            })
        }
        for (type, group, counter, laned) in [("EC", "P-256", "ecdh_derive", true), ("EC", "P-384", "ecdh_derive", true),
                                              ("EC", "P-521", "ecdh_derive", true), ("X25519", nil, "x25519_derive", true),
                                              ("X448", nil, "x448_derive", false)] {
            let own = try key(type, group: group)
            steps.append(Step(label: "\(group ?? type) derive", counter: counter, laned: laned) {
                guard let other = LoadedProvider.generate(type, in: plain, group: group),
                      let peer = LoadedProvider.copyPublic(other, to: context) else { throw HarnessError("a peer") }
                let box = OutputBox()
                return ({ let (result, bytes) = derive(in: context, own.ours, peer); EVP_PKEY_free(peer); box.output = bytes; return result },
                        { defer { EVP_PKEY_free(other) }
                          guard let peerPlain = LoadedProvider.copyPublic(other, to: plain) else { return false }
                          defer { EVP_PKEY_free(peerPlain) }
                          return box.output == derive(in: plain, own.plain, peerPlain).1 })
            })
        }
        return steps
    }

    static func sign(_ key: OpaquePointer, in context: OpaquePointer, _ digest: [UInt8], padding: Int32? = nil) -> (Int32, [UInt8]) {
        ProviderFixtures.sign(key, in: context, digest, padding: padding)
    }

    static func verify(_ key: OpaquePointer, in context: OpaquePointer, _ signature: [UInt8], _ digest: [UInt8]) -> Bool {
        ProviderFixtures.verifies(key, in: context, signature, digest, digestSign: false)
    }

    static func digestSign(_ key: OpaquePointer, in context: OpaquePointer, _ message: [UInt8]) -> (Int32, [UInt8]) {
        let signer = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(signer) }
        var pkeyContext: OpaquePointer?
        var signature = [UInt8](repeating: 0, count: 512)
        var length = signature.count
        guard EVP_DigestSignInit_ex(signer, &pkeyContext, "SHA256", context, nil, key, nil) == 1,
              EVP_PKEY_CTX_set_rsa_padding(pkeyContext, RSA_PKCS1_PSS_PADDING) == 1 else { return (0, []) }
        let result = EVP_DigestSign(signer, &signature, &length, message, message.count)
        return (result, Array(signature.prefix(result == 1 ? length : 0)))
    }

    static func digestVerify(_ key: OpaquePointer, in context: OpaquePointer, _ signature: [UInt8], _ message: [UInt8]) -> Bool {
        ProviderFixtures.verifies(key, in: context, signature, message, digestSign: true)
    }

    static func encrypt(_ key: OpaquePointer, in context: OpaquePointer, _ message: [UInt8]) -> [UInt8] {
        guard let encrypter = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return [] }
        defer { EVP_PKEY_CTX_free(encrypter) }
        var out = [UInt8](repeating: 0, count: 512)
        var length = out.count
        guard EVP_PKEY_encrypt_init(encrypter) == 1, EVP_PKEY_CTX_set_rsa_padding(encrypter, RSA_PKCS1_OAEP_PADDING) == 1,
              EVP_PKEY_encrypt(encrypter, &out, &length, message, message.count) == 1 else { return [] }
        return Array(out.prefix(length))
    }

    static func decrypt(_ key: OpaquePointer, in context: OpaquePointer, _ ciphertext: [UInt8]) -> (Int32, [UInt8]) {
        guard let decrypter = EVP_PKEY_CTX_new_from_pkey(context, key, nil) else { return (0, []) }
        defer { EVP_PKEY_CTX_free(decrypter) }
        var out = [UInt8](repeating: 0, count: 512)
        var length = out.count
        guard EVP_PKEY_decrypt_init(decrypter) == 1,
              EVP_PKEY_CTX_set_rsa_padding(decrypter, RSA_PKCS1_OAEP_PADDING) == 1 else { return (0, []) }
        let result = EVP_PKEY_decrypt(decrypter, &out, &length, ciphertext, ciphertext.count)
        return (result, Array(out.prefix(result == 1 ? length : 0)))
    }

    static func derive(in context: OpaquePointer, _ own: OpaquePointer, _ peer: OpaquePointer) -> (Int32, [UInt8]) {
        ProviderFixtures.derive(in: context, own, peer)
    }
}
