fn main() {
    kallithea_build::native_module_exports();
}
