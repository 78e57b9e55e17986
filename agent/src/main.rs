fn main() {
    eprintln!("nes-agent: not built yet");
    std::process::exit(2);
}
