import ArgumentParser

/// `rmq rpc`: the group of RPC subcommands.
struct RPCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract: "Call an RPC server, or serve requests from a queue.",
        subcommands: [RPCCallCommand.self, RPCServeCommand.self])
}
