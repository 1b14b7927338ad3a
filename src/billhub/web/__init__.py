"""The citizen web service: pages, the app's JSON API, the companies' desk."""
