import COpenSSL

/// Private keys where applications reference them, loaded as they load them:
/// keys in a token stay the token provider's (here: swiftasync's instance for it).
public enum PrivateKeys {
    /// The private key a URI names (`pkcs11:…`, `file:…`, a path), through the STORE operation.
    public static func load(uri: String, in context: OpaquePointer?) -> OpaquePointer? {
        guard let store = OSSL_STORE_open_ex(uri, context, nil, nil, nil, nil, nil, nil) else { return nil }
        defer { OSSL_STORE_close(store) }
        while OSSL_STORE_eof(store) == 0 {
            // A load that fails for good sets the store's error flag: stop there, not spin.
            guard let info = OSSL_STORE_load(store) else {
                if OSSL_STORE_error(store) != 0 { break }
                continue
            }
            defer { OSSL_STORE_INFO_free(info) }
            if OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY {
                return OSSL_STORE_INFO_get1_PKEY(info)
            }
        }
        return nil
    }

    /// The private key a PEM text names, through the DECODER operation (PEM_read_bio_PrivateKey's path).
    public static func load(pem: String, in context: OpaquePointer) -> OpaquePointer? {
        Array(pem.utf8).withUnsafeBufferPointer { bytes in
            // A memory BIO reads the buffer in place: it must not outlive this closure.
            guard let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey_ex(bio, nil, nil, nil, context, nil)
        }
    }
}
