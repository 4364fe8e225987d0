"""The notifier: deliver alerts to users' Discord, Telegram and signed JSON webhooks (see README.md)."""
