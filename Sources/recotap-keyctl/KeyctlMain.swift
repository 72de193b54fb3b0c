import RecotapKeyctl

/// recotap-keyctl's own executable (installed, it is a symlink to recotap-keyd, which
/// runs the same command).
@main
enum KeyctlMain {
    static func main() async {
        await KeyctlCommand.main()
    }
}
