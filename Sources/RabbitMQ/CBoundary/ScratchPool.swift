import CRabbitMQ
import Glibc

/// A rabbitmq-c memory pool for building outbound C structures (strings, tables,
/// properties) on the I/O thread. ``recycle()`` after each send keeps its pages, so steady
/// traffic allocates nothing. Never shared between threads.
final class ScratchPool {
    let pool: UnsafeMutablePointer<amqp_pool_t>

    init(pageSize: Int = 16 * 1024) {
        pool = .allocate(capacity: 1)
        init_amqp_pool(pool, pageSize)
    }

    deinit {
        empty_amqp_pool(pool)
        pool.deallocate()
    }

    /// Frees everything allocated since the last recycle; keeps the pages.
    func recycle() {
        recycle_amqp_pool(pool)
    }

    /// Frees everything, pages included: for a pool that may stay unused for long (after the
    /// login); the next allocation takes a new page.
    func empty() {
        empty_amqp_pool(pool)
    }

    func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        guard let memory = amqp_pool_alloc(pool, size) else {
            fatalError("rabbitmq-c pool allocation of \(size) bytes failed")
        }
        return memory
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        // A native string's UTF-8 is contiguous: read in place, without the copy a mutable
        // `withUTF8` makes (a retain and a release per string). Bridged or lazily decoded
        // strings take the copying path.
        if let copied = string.utf8.withContiguousStorageIfAvailable({ bytes(UnsafeRawBufferPointer($0)) }) {
            return copied
        }
        var string = string
        return string.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    func bytes(_ buffer: UnsafeRawBufferPointer) -> amqp_bytes_t {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
        let memory = allocate(buffer.count)
        memory.copyMemory(from: base, byteCount: buffer.count)
        return amqp_bytes_t(len: buffer.count, bytes: memory)
    }

    func bytes(_ array: [UInt8]) -> amqp_bytes_t {
        array.withUnsafeBytes { bytes($0) }
    }
}

extension String {
    /// Copies rabbitmq-c bytes (not NUL-terminated) into a String, replacing invalid UTF-8.
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension String {
    /// `cached` when it holds exactly these bytes (compared, not hashed), else a new String
    /// that also becomes the cached one.
    @inline(__always)
    static func reusing(_ cached: inout String, for bytes: amqp_bytes_t) -> String {
        if cached.hasAMQPBytes(bytes) { return cached }
        cached = String(amqpBytes: bytes)
        return cached
    }

    /// Whether this string's UTF-8 is exactly `bytes`.
    @inline(__always)
    func hasAMQPBytes(_ bytes: amqp_bytes_t) -> Bool {
        let same = utf8.withContiguousStorageIfAvailable { utf8 in
            utf8.count == bytes.len && (bytes.len == 0 || memcmp(utf8.baseAddress!, bytes.bytes!, bytes.len) == 0)
        }
        return same == true
    }
}

extension Array where Element == UInt8 {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = []
            return
        }
        self = Array(UnsafeRawBufferPointer(start: base, count: bytes.len))
    }
}
