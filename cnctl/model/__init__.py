"""Model archives on the controller side: resolve a stack's archive URL, fetch it, pin its sha256."""
