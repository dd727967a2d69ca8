"""`tuneforge serve`: an HTTP API over a trained run or an exported model."""
