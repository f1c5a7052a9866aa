# The web app (app.py) as a container: `docker build -t whisper-app . && docker run -p 7860:7860 whisper-app`.
FROM python:3.11-slim

# Debian's ffmpeg decodes uploads and links (whisper_core uses the one on PATH before imageio-ffmpeg's).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# Hugging Face Spaces runs containers as user 1000; so does this image.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /home/user/app

# torch==2.13.0 from PyPI brings CUDA libraries (several GB); the CPU build keeps the image small. Build
# with --build-arg TORCH_INDEX=https://pypi.org/simple for a GPU host.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install --user --extra-index-url "$TORCH_INDEX" -r requirements.txt

COPY --chown=user app.py ./
COPY --chown=user whisper_core ./whisper_core
COPY --chown=user examples ./examples

# Convert the bundled checkpoint once now, so that the container starts in seconds.
RUN python -c "import whisper_core; whisper_core.load_model()"

EXPOSE 7860
CMD ["python", "app.py"]
