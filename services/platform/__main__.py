from services.platform.service import serve

if __name__ == "__main__":
    serve()
