import ArgumentParser

@main
struct RMQ: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmq", abstract: "RabbitMQ from the shell.")
}
