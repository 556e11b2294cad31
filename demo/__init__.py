"""The local demo: deploy to the emulator, run a worker as the task role, run tasks."""
