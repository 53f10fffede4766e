fn main() {
    kallithea_build::isapi_exports();
}
