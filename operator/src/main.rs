fn main() {
    eprintln!("nes-operator: not built yet");
    std::process::exit(1);
}
