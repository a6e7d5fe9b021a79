import Glibc

/// For the threads of their own that read standard input and write standard output, after a
/// `read` or `write` failed with `code`: whether to try again. A non-blocking descriptor
/// (inherited so) is waited for first, until it is ready for `events` (POLLIN or POLLOUT).
func shouldRetry(after code: Int32, on descriptor: Int32, waitingFor events: Int32) -> Bool {
    if code == EINTR { return true }
    guard code == EAGAIN || code == EWOULDBLOCK else { return false }
    var poller = pollfd(fd: descriptor, events: Int16(events), revents: 0)
    _ = poll(&poller, 1, -1)
    return true
}
